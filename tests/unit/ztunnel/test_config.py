"""The ztunnel command line: a good one parses, a bad one is refused naming every problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import pytest

from ztunnel.config import ConfigError, ZtunnelConfig, check, parse_args

BASE = ["--node", "node-a", "--node-address", "127.20.0.1"]
STATIC = ["--local-config", "mesh.yaml", "--cert-dir", "certs"]


def test_static_mode_with_defaults() -> None:
    config = parse_args([*BASE, *STATIC])
    assert config == ZtunnelConfig(
        node="node-a", node_address="127.20.0.1", local_config=Path("mesh.yaml"), cert_dir=Path("certs"))
    assert (config.admin_port, config.metrics_port, config.ready_port) == (15000, 15020, 15021)
    assert (config.hbone_port, config.explicit_proxy_port, config.drain_seconds) == (15008, 15080, 5.0)


def test_pushed_mode_parses() -> None:
    config = parse_args([*BASE, "--istiod", "wss://127.0.0.1:15012", "--token-file", "t", "--root-cert", "r"])
    assert config.istiod == "wss://127.0.0.1:15012" and not config.uses_local_config


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"node_address": "node-a.local"}, "--node-address 'node-a.local' is not an IP address"),
        ({"node": ""}, "--node must not be empty"),
        ({"cert_dir": None}, "--local-config and --cert-dir go together"),
        ({"istiod": "wss://x:1"}, "use either --local-config/--cert-dir or --istiod"),
        ({"local_config": None, "cert_dir": None}, "give a state source"),
        ({"local_config": None, "cert_dir": None, "istiod": "wss://x:1"}, "--istiod needs --token-file"),
        ({"local_config": None, "cert_dir": None, "istiod": "https://x:1", "token_file": Path("t"),
          "root_cert": Path("r")}, "must be a ws:// or wss:// URL"),
        ({"admin_port": 70000}, "--admin-port 70000 is outside 0..65535"),
        ({"explicit_proxy_port": -1}, "--explicit-proxy-port -1 is outside 0..65535"),
        ({"drain_seconds": -1.0}, "--drain-seconds -1.0 must not be negative"),
        ({"log_level": "chatty"}, "--log-level 'chatty' is not one of trace, debug, info"),
        ({"workers": 0}, "--workers 0 must be at least 1"),
        ({"workers": 2, "hbone_port": 0}, "--workers > 1 needs fixed --hbone-port and --explicit-proxy-port"),
        ({"workers": 2, "worker_index": 1}, "--worker-index is set by the main ztunnel"),
    ],
)
def test_each_problem_is_named(changes: dict[str, Any], problem: str) -> None:
    good = ZtunnelConfig(node="n", node_address="127.0.0.1", local_config=Path("m"), cert_dir=Path("c"))
    assert check(good) == []
    problems = check(attrs.evolve(good, **changes))
    assert any(problem in text for text in problems), problems


def test_parse_args_raises_with_all_problems() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_args(["--node", "n", "--node-address", "nope", "--admin-port", "99999"])
    message = str(caught.value)
    assert "not an IP address" in message and "--admin-port 99999" in message and "give a state source" in message
    assert "python -m ztunnel --help" in message


def test_a_worker_command_line_describes_the_same_node_with_kernel_chosen_admin_ports() -> None:
    main = parse_args([*BASE, *STATIC, "--workers", "3", "--drain-seconds", "2", "--log-level", "debug"])
    assert main.reuse_port and not main.is_worker
    worker = parse_args(main.worker_argv(2))
    assert worker.is_worker and worker.reuse_port and worker.workers == 1 and worker.worker_index == 2
    assert (worker.admin_port, worker.metrics_port, worker.ready_port) == (0, 0, 0)
    same = ("node", "node_address", "local_config", "cert_dir", "hbone_port", "explicit_proxy_port",
            "drain_seconds", "log_level")
    assert all(getattr(worker, name) == getattr(main, name) for name in same)


def test_a_single_process_ztunnel_does_not_share_its_ports() -> None:
    assert not parse_args([*BASE, *STATIC]).reuse_port
