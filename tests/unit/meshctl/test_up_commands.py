"""`status`, `exec` and `logs` against a status file (no mesh processes): output and error paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from meshctl.cli import cli
from meshctl.runner.state import MeshStatus, PodStatus, ProxyStatus, write_status


def make_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    log = state / "pod-prod-search-0.log"
    log.write_text("".join(f"line {i}\n" for i in range(5)))
    status = MeshStatus(runner_pid=os.getpid(), state_dir=str(state), capture="proxy", nodes={"node-1": "127.9.0.1"})
    # istiod's admin port 9 on 127.0.0.1 (discard) is closed: the push state shows as unknown
    status.proxies["istiod"] = ProxyStatus(kind="istiod", name="istiod", node="", admin="http://127.0.0.1:9")
    status.proxies["ztunnel-node-1"] = ProxyStatus(kind="ztunnel", name="ztunnel-node-1", node="node-1", ready=True)
    status.pods["prod/search-0"] = PodStatus(
        namespace="prod", name="search-0", deployment="search", ip="127.9.1.0", node="node-1",
        identity="spiffe://cluster.local/ns/prod/sa/search", ready=True, log=str(log),
        env={"POD_IP": "127.9.1.0"},
    )
    write_status(state, status)
    return state


def test_status_table_and_json(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    table = CliRunner().invoke(cli, ["status", "--state-dir", str(state)])
    assert table.exit_code == 0, table.output
    assert "search-0" in table.output and "spiffe://cluster.local/ns/prod/sa/search" in table.output
    assert "unknown" in table.output  # the ztunnel's push state, istiod_lite not answering
    document = json.loads(CliRunner().invoke(cli, ["status", "-o", "json", "--state-dir", str(state)]).output)
    assert document["pods"][0]["ip"] == "127.9.1.0" and "env" not in document["pods"][0]
    assert document["proxies"][1]["sync"] == "unknown"


def test_exec_names_the_deployments_that_exist(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    result = CliRunner().invoke(cli, ["exec", "-n", "prod", "client", "--state-dir", str(state), "--", "true"])
    assert result.exit_code == 1
    assert "no pods of deployment prod/client" in result.output and "prod/search" in result.output


def test_exec_of_a_missing_program_says_so(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    result = CliRunner().invoke(
        cli, ["exec", "-n", "prod", "search", "--state-dir", str(state), "--", str(tmp_path / "no-such-tool")]
    )
    assert result.exit_code == 127
    assert "cannot run" in result.output and "PATH" in result.output


def test_logs_prefix_each_line_with_its_pod_and_tail(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    result = CliRunner().invoke(cli, ["logs", "-n", "prod", "search", "--tail", "2", "--state-dir", str(state)])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["[search-0] line 3", "[search-0] line 4"]


def test_without_a_running_mesh_every_reader_says_how_to_start_one(tmp_path: Path) -> None:
    for args in (["status"], ["logs", "search"], ["exec", "search", "--", "true"]):
        result = CliRunner().invoke(cli, [*args[:1], "--state-dir", str(tmp_path), *args[1:]])
        assert result.exit_code == 1, args
        assert "no mesh is running" in result.output and "meshctl up" in result.output
