"""meshctl namespace/canary/version against an in-process istiod_lite (real admin API, stores,
translation), run as described in tests/unit/meshctl/in_process_istiod.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import pytest
from click.testing import Result

from meshctl.commands import register as register_control_plane
from meshctl.operator.verbs import register
from tests.unit.meshctl.in_process_istiod import invoke, logs_to_the_real_stderr, running_istiod


@pytest.fixture(autouse=True)
def _logs_to_the_real_stderr() -> Iterator[None]:
    with logs_to_the_real_stderr():
        yield


def _group() -> click.Group:
    @click.group()
    def meshctl() -> None:
        """The commands under test."""

    register(meshctl)
    register_control_plane(meshctl)
    return meshctl


async def _invoke(*args: str) -> Result:
    return await invoke(_group(), *args)


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    async with running_istiod(tmp_path) as state:
        yield state


async def test_namespace_enroll_keeps_labels_and_unenroll_reverts(state_dir: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "ns.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod, labels: {team: search}}\n")
    assert (await _invoke("apply", "-f", str(manifest), "--state-dir", str(state_dir))).exit_code == 0

    enrolled = await _invoke("namespace", "enroll", "prod", "--state-dir", str(state_dir))
    assert enrolled.exit_code == 0, enrolled.output
    assert enrolled.stdout.strip() == "namespace prod configured"
    listed = json.loads((await _invoke("get", "ns", "-o", "json", "--state-dir", str(state_dir))).stdout)
    labels = next(i for i in listed if i["name"] == "prod")["manifest"]["metadata"]["labels"]
    assert labels == {"team": "search", "istio.io/dataplane-mode": "ambient"}

    assert (await _invoke("namespace", "unenroll", "prod", "--state-dir", str(state_dir))).exit_code == 0
    listed = json.loads((await _invoke("get", "ns", "-o", "json", "--state-dir", str(state_dir))).stdout)
    assert next(i for i in listed if i["name"] == "prod")["manifest"]["metadata"]["labels"] == {"team": "search"}


async def test_canary_set_writes_the_split_istiod_lite_accepts(state_dir: Path) -> None:
    first = await _invoke("canary", "set", "search", "-n", "prod", "v1=95", "v2=5", "--state-dir", str(state_dir))
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        "virtualservice prod/search created",
        "destinationrule prod/search created",
    ]
    rollback = await _invoke("canary", "set", "search", "-n", "prod", "v1=100", "v2=0", "--state-dir", str(state_dir))
    assert rollback.stdout.splitlines()[0] == "virtualservice prod/search configured"
    listed = json.loads((await _invoke("get", "vs", "-n", "prod", "-o", "json", "--state-dir", str(state_dir))).stdout)
    route = listed[0]["manifest"]["spec"]["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in route] == [("v1", 100), ("v2", 0)]


async def test_canary_set_refuses_weights_that_do_not_add_up(state_dir: Path) -> None:
    result = await _invoke("canary", "set", "search", "-n", "prod", "v1=90", "v2=5", "--state-dir", str(state_dir))
    assert result.exit_code == 2 and "add up to 95, not 100" in result.output
    listed = json.loads((await _invoke("get", "vs", "-o", "json", "--state-dir", str(state_dir))).stdout)
    assert listed == [], "nothing was applied"


async def test_version_names_the_client_and_the_control_plane(state_dir: Path, tmp_path: Path) -> None:
    running = await _invoke("version", "--state-dir", str(state_dir))
    assert running.stdout.splitlines()[0].startswith("client version: ")
    assert "control plane: istiod_lite admin at 127." in running.stdout
    nothing = await _invoke("version", "--state-dir", str(tmp_path / "none"))
    assert nothing.exit_code == 0 and "control plane: not reachable" in nothing.stdout
