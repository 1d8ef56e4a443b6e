"""The command lines `meshctl up` gives each process, and when each counts as ready."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshctl.runner.components import istiod_spec, pod_spec, waypoint_spec, ztunnel_spec
from meshctl.runner.supervisor import ReadyLine, Started, TcpProbe
from meshctl.runner.workloads import PodPlan

STATE = Path("/state")


def plan(ports: tuple[tuple[str | None, int], ...]) -> PodPlan:
    return PodPlan(
        namespace="prod", name="search-0", deployment="search", node="node-2", service_account="search",
        labels={"app": "search"}, command=("python3", "-m", "http.server"), args=("--bind", "$(POD_IP)", "$(PORT)"),
        env=(("PORT", "8080"),), container_ports=ports, fingerprint="f",
    )


def flags(argv: Sequence[str], *names: str) -> dict[str, str]:
    args = list(argv)
    return {name: args[args.index(name) + 1] for name in names}


def test_istiod_binds_both_ports_on_the_mesh_s_control_address_and_issues_node_tokens() -> None:
    spec = istiod_spec("py", state_dir=STATE, config_dir=STATE / "config", host="127.9.0.251", nodes=["n1", "n2"])
    assert list(spec.argv[:3]) == ["py", "-m", "istiod_lite"]
    assert flags(spec.argv, "--host", "--admin-host", "--nodes", "--config-dir") == {
        "--host": "127.9.0.251", "--admin-host": "127.9.0.251", "--nodes": "n1,n2", "--config-dir": "/state/config",
    }
    assert isinstance(spec.readiness, ReadyLine)


def test_ztunnel_uses_its_node_s_token_and_the_mesh_root() -> None:
    spec = ztunnel_spec("py", node="node-1", address="127.9.0.1", control="127.9.0.251:15012", state_dir=STATE)
    assert spec.name == "ztunnel-node-1"
    assert flags(spec.argv, "--node", "--node-address", "--istiod", "--token-file", "--root-cert") == {
        "--node": "node-1",
        "--node-address": "127.9.0.1",
        "--istiod": "wss://127.9.0.251:15012/v1/xds",
        "--token-file": "/state/tokens/node-1.token",
        "--root-cert": "/state/root-cert.pem",
    }
    assert "--workers" not in spec.argv


def test_ztunnel_workers_are_passed_only_when_more_than_one() -> None:
    spec = ztunnel_spec("py", node="node-1", address="127.9.0.1", control="127.9.0.251:15012", state_dir=STATE,
                        workers=2)
    assert flags(spec.argv, "--workers") == {"--workers": "2"}


def test_waypoint_follows_istiod_with_its_own_token_and_keeps_admin_in_the_host() -> None:
    spec = waypoint_spec("py", namespace="prod", name="waypoint", address="198.18.0.9",
                         identity="spiffe://cluster.local/ns/prod/sa/waypoint", control="127.9.0.251:15012",
                         state_dir=STATE, admin_address="127.9.1.9", netns="am-x-pod-waypoint-prod-waypoint")
    assert spec.name == "waypoint-prod-waypoint"
    assert flags(spec.argv, "--address", "--admin-address", "--istiod", "--token-file", "--root-cert", "--netns") == {
        "--address": "198.18.0.9",
        "--admin-address": "127.9.1.9",
        "--istiod": "wss://127.9.0.251:15012/v1/xds",
        "--token-file": "/state/tokens/waypoint-prod-waypoint.token",
        "--root-cert": "/state/root-cert.pem",
        "--netns": "am-x-pod-waypoint-prod-waypoint",
    }
    assert spec.netns is None  # the process itself stays in the host namespace


def test_a_pod_runs_its_expanded_command_with_downward_and_proxy_variables() -> None:
    spec, env = pod_spec(plan((("http", 8080),)), "127.9.1.4")
    assert spec.name == "pod-prod-search-0"
    assert list(spec.argv) == ["python3", "-m", "http.server", "--bind", "127.9.1.4", "8080"]
    assert env["POD_IP"] == "127.9.1.4" and env["SERVICE_ACCOUNT"] == "search" and env["NODE_NAME"] == "node-2"
    assert env["http_proxy"] == "http://127.9.1.4:15080"  # the node ztunnel listens on the pod's own address
    assert spec.env == env
    assert spec.readiness == TcpProbe("127.9.1.4", 8080)


def test_a_pod_without_ports_is_ready_once_running() -> None:
    spec, _ = pod_spec(plan(()), "127.9.1.5")
    assert isinstance(spec.readiness, Started)
