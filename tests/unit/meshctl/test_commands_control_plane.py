"""meshctl apply/delete/get/proxy-status against an in-process istiod_lite (loopback, temp state dir),
run as described in tests/unit/meshctl/in_process_istiod.py."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import pytest
import trio
import yaml
from click.testing import Result

from meshctl.commands import register
from meshctl.commands.proxy_status import render
from tests.unit.meshctl.in_process_istiod import invoke, logs_to_the_real_stderr, running_istiod

CART = "apiVersion: v1\nkind: Service\nmetadata: {name: cart}\nspec: {ports: [{port: 8080}]}\n"
SEARCH = "apiVersion: v1\nkind: Service\nmetadata: {name: search, namespace: prod}\nspec: {ports: [{port: 80}]}\n"


@pytest.fixture(autouse=True)
def _logs_to_the_real_stderr() -> Iterator[None]:
    with logs_to_the_real_stderr():
        yield


def _group() -> click.Group:
    @click.group()
    def meshctl() -> None:
        """The commands under test, on a group of their own."""

    register(meshctl)
    return meshctl


async def _invoke(*args: str) -> Result:
    return await invoke(_group(), *args)


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    async with running_istiod(tmp_path) as state:
        yield state


async def test_apply_get_and_delete_round_trip(state_dir: Path, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "cart.yaml").write_text(CART)
    (manifests / "search.yaml").write_text(SEARCH)

    applied = await _invoke("apply", "-f", str(manifests), "-n", "shop", "--state-dir", str(state_dir))
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines() == ["service shop/cart created", "service prod/search created"]

    listed = await _invoke("get", "svc", "-n", "shop", "-o", "json", "--state-dir", str(state_dir))
    assert [(i["namespace"], i["name"]) for i in json.loads(listed.stdout)] == [("shop", "cart")]
    as_yaml = await _invoke("get", "services", "-o", "yaml", "--state-dir", str(state_dir))
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(as_yaml.stdout)] == ["search", "cart"]
    table = await _invoke("get", "--state-dir", str(state_dir))
    assert table.stdout.splitlines()[0].split() == ["NAMESPACE", "NAME", "KIND", "SOURCE"]

    deleted = await _invoke("delete", "-f", str(manifests / "cart.yaml"), "-n", "shop", "--state-dir", str(state_dir))
    assert deleted.exit_code == 0 and deleted.stdout == "service shop/cart deleted\n"
    again = await _invoke("delete", "-f", str(manifests / "cart.yaml"), "-n", "shop", "--state-dir", str(state_dir))
    assert again.exit_code == 1 and again.stdout == "service shop/cart not found\n"


async def test_an_invalid_file_is_refused_with_every_error_and_nothing_is_applied(
    state_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SEARCH + "---\n" + CART.replace("8080", "eighty") + "---\n" + CART.replace("Service", "Servise"))
    result = await _invoke("apply", "-f", str(bad), "--state-dir", str(state_dir))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert f"{bad}: document 2 (Service cart): spec.ports[0].port" in errors[0]
    assert f"{bad}: document 3" in errors[1] and 'did you mean "Service"' in errors[1]
    listed = await _invoke("get", "-o", "json", "--state-dir", str(state_dir))
    assert json.loads(listed.stdout) == []


async def test_istiod_admin_names_the_api_directly(state_dir: Path) -> None:
    admin = json.loads((state_dir / "istiod.json").read_text())["addresses"]["admin"]
    result = await _invoke("proxy-status", "--istiod-admin", admin, "--state-dir", "/nonexistent")
    assert result.exit_code == 0 and result.stdout == "No proxies connected.\n"
    as_json = await _invoke("proxy-status", "-o", "json", "--istiod-admin", admin)
    assert json.loads(as_json.stdout)["proxies"] == []


async def test_with_nothing_running_the_error_says_how_to_start_a_mesh(tmp_path: Path) -> None:
    result = await _invoke("get", "svc", "--state-dir", str(tmp_path / "empty"))
    assert result.exit_code == 1
    assert f"no mesh running from {tmp_path / 'empty'}/" in result.stderr
    assert "start one with `meshctl up`" in result.stderr


async def test_a_stale_record_from_an_exited_istiod_says_it_exited(tmp_path: Path) -> None:
    exited = await trio.run_process([sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True)
    with socket.socket() as probe:  # a loopback port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    state.mkdir()
    record = {"pid": int(exited.stdout.decode()), "addresses": {"admin": f"127.0.0.1:{port}", "control": "127.0.0.1:1"}}
    (state / "istiod.json").write_text(json.dumps(record))
    result = await _invoke("proxy-status", "--state-dir", str(state))
    assert result.exit_code == 1
    assert f"istiod_lite admin API at 127.0.0.1:{port} is not answering" in result.stderr
    assert f"(pid {int(exited.stdout.decode())})" in result.stderr and "has exited" in result.stderr


def _row(proxy: str, type_name: str, state: str, error: str | None = None) -> dict[str, str | None]:
    return {"proxy": proxy, "type": type_name, "state": state, "sent_version": "v2", "nack_error": error}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], ["No proxies connected."]),
        (
            [_row("node-a", "service", "SYNCED"), _row("node-a", "workload", "STALE")],
            ["NAME     SERVICE   WORKLOAD", "node-a   SYNCED    STALE"],
        ),
        (
            [_row("node-b", "service", "NACKED", "ValueError: bad vip"), _row("node-a", "service", "SYNCED")],
            [
                "NAME     SERVICE",
                "node-a   SYNCED",
                "node-b   NACKED",
                "node-b service NACK (version v2): ValueError: bad vip",
            ],
        ),
    ],
    ids=["no proxies", "one column per type", "nack errors listed under the table"],
)
def test_proxy_status_table(rows: list[dict[str, str | None]], expected: list[str]) -> None:
    assert render({"proxies": rows}).splitlines() == expected


async def test_a_refused_request_shows_istiods_message_once(state_dir: Path) -> None:
    result = await _invoke("get", "gizmo", "--state-dir", str(state_dir))
    assert result.exit_code == 1
    assert result.stderr.startswith("meshctl: get failed: unknown resource kind 'gizmo'")
    assert result.stderr.count("unknown resource kind") == 1 and "VirtualService" in result.stderr


async def test_a_refusal_by_istiod_lists_every_error_and_says_nothing_changed(state_dir: Path, tmp_path: Path) -> None:
    both = tmp_path / "both.yaml"  # valid on its own; -n makes the two documents the same resource
    both.write_text(CART + "---\n" + CART.replace("name: cart}", "name: cart, namespace: shop}"))
    result = await _invoke("apply", "-f", str(both), "-n", "shop", "--state-dir", str(state_dir))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"error: {both}: document 2 (Service shop/cart): metadata.name: "
        "Service shop/cart is defined more than once; later definitions are rejected"
    )
    assert lines[-1].startswith("meshctl: apply refused: 1 error(s); nothing was applied")
    assert "nothing was changed" in lines[-1]
