"""meshctl namespace/canary/version against an in-process istiod_lite (real admin API, stores, translation).

Like tests/unit/meshctl/test_commands_control_plane.py: each command runs through click's CliRunner in
a worker thread while the test's trio loop serves istiod_lite.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import pytest
import structlog
import trio
from click.testing import CliRunner, Result

from istiod_lite.server import Istiod, IstiodOptions
from meshcore.admin.client import http_request
from meshcore.telemetry.logs import configure_logging
from meshctl.commands import register as register_control_plane
from meshctl.control_plane import find_admin
from meshctl.operator.verbs import register


@pytest.fixture(autouse=True)
def _logs_to_the_real_stderr() -> Iterator[None]:
    configure_logging("warning", stream=sys.__stderr__)
    yield
    structlog.reset_defaults()


def _group() -> click.Group:
    @click.group()
    def meshctl() -> None:
        """The commands under test."""

    register(meshctl)
    register_control_plane(meshctl)
    return meshctl


async def _invoke(*args: str) -> Result:
    runner = CliRunner()
    return await trio.to_thread.run_sync(lambda: runner.invoke(_group(), list(args), catch_exceptions=False))


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    state = tmp_path / "state"
    istiod = Istiod(IstiodOptions(state_dir=state, control_port=0, admin_port=0))
    async with trio.open_nursery() as nursery:
        await nursery.start(istiod.run)
        yield state
        nursery.cancel_scope.cancel()


async def _config_dump(state: Path) -> dict[str, object]:
    target = find_admin(state)
    host, _, port = target.address.rpartition(":")
    response = await http_request(host, int(port), "GET", "/debug/config_dump")
    dump: dict[str, object] = response.json()
    return dump


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
