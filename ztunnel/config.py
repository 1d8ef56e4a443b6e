"""The ztunnel process's settings, read from the command line and checked before anything binds.

``python -m ztunnel --node NAME --node-address 127.X.0.N`` plus a source of state and certificates:

* ``--local-config FILE --cert-dir DIR`` — no control plane: state from ztunnel's own
  ``LOCAL_XDS_PATH`` YAML (:mod:`ztunnel.local_config`) and certificates from files
  (:mod:`ztunnel.cert_dir` documents the layout);
* ``--istiod wss://HOST:PORT/v1/xds --token-file F --root-cert F`` — state pushed by istiod_lite,
  certificates from its CA (:mod:`ztunnel.pushed`); the token is the node's (istiod_lite writes
  ``<state-dir>/tokens/<node>.token``), the root is the mesh root it must present a chain to.

Ports default to the standard ones (DESIGN §3 "Ports"); each process has an address of its own in proxy
mode, so they never clash. ``0`` means "any free port" (tests), and the ready line reports what was bound.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import attrs

from meshcore.errors import MeshError
from meshcore.telemetry.logs import LEVELS, InvalidLogLevel, normalize_level

DEFAULT_ADMIN_PORT = 15000
DEFAULT_METRICS_PORT = 15020
DEFAULT_READY_PORT = 15021
DEFAULT_HBONE_PORT = 15008
DEFAULT_EXPLICIT_PROXY_PORT = 15080
DEFAULT_DRAIN_SECONDS = 5.0


class ConfigError(MeshError):
    """The command line does not describe a ztunnel that can run."""

    hint = "{detail}; see `python -m ztunnel --help`"


@attrs.frozen(kw_only=True)
class ZtunnelConfig:
    node: str
    node_address: str
    local_config: Path | None = None
    cert_dir: Path | None = None
    istiod: str | None = None
    token_file: Path | None = None
    root_cert: Path | None = None
    admin_port: int = DEFAULT_ADMIN_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    ready_port: int = DEFAULT_READY_PORT
    hbone_port: int = DEFAULT_HBONE_PORT
    explicit_proxy_port: int = DEFAULT_EXPLICIT_PROXY_PORT
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    log_level: str = "info"
    workers: int = 1
    worker_index: int = 0
    capture: str = "proxy"  # "proxy": per-pod listeners on pod IPs; "netns": pods handed over by ZDS
    zds_socket: Path | None = None
    dns_upstream: str | None = None  # host:port non-mesh names go to; None: the node's resolv.conf

    @property
    def uses_local_config(self) -> bool:
        return self.local_config is not None

    @property
    def reuse_port(self) -> bool:
        """Whether pod listeners join a ``SO_REUSEPORT`` group shared with sibling worker processes."""
        return self.workers > 1 or self.worker_index > 0

    @property
    def is_worker(self) -> bool:
        """A worker process started by a node's main ztunnel (``--workers``), not the main process."""
        return self.worker_index > 0

    def worker_argv(self, index: int) -> list[str]:
        """The command-line flags of worker ``index``: the same node, sources and pod ports as this
        process, admin ports chosen by the kernel (the main process owns the standard ones)."""
        argv = ["--node", self.node, "--node-address", self.node_address]
        for flag, value in (
            ("--local-config", self.local_config),
            ("--cert-dir", self.cert_dir),
            ("--istiod", self.istiod),
            ("--token-file", self.token_file),
            ("--root-cert", self.root_cert),
        ):
            if value is not None:
                argv += [flag, str(value)]
        argv += [
            "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0",
            "--hbone-port", str(self.hbone_port), "--explicit-proxy-port", str(self.explicit_proxy_port),
            "--drain-seconds", str(self.drain_seconds), "--log-level", self.log_level,
            "--worker-index", str(index),
        ]
        return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ztunnel",
        description="Per-node L4 proxy of the mesh (proxy mode: one loopback address per node and per pod).",
    )
    parser.add_argument("--node", required=True, help="this node's name; workloads with this node are local")
    parser.add_argument("--node-address", required=True, help="the node's own IP (admin/metrics/ready bind here)")
    static = parser.add_argument_group("static state (no control plane)")
    static.add_argument("--local-config", type=Path, help="ztunnel LOCAL_XDS_PATH YAML (workloads, services, policies)")
    static.add_argument("--cert-dir", type=Path, help="certificates: root-cert.pem and <ns>/<sa>/{cert-chain,key}.pem")
    pushed = parser.add_argument_group("pushed state (istiod_lite)")
    pushed.add_argument("--istiod", help="push endpoint, wss://host:port")
    pushed.add_argument("--token-file", type=Path, help="bearer token file for istiod_lite")
    pushed.add_argument("--root-cert", type=Path, help="root certificate(s) istiod_lite's TLS is checked against")
    ports = parser.add_argument_group("ports (0 = any free port)")
    ports.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT)
    ports.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    ports.add_argument("--ready-port", type=int, default=DEFAULT_READY_PORT)
    ports.add_argument("--hbone-port", type=int, default=DEFAULT_HBONE_PORT,
                       help="per-pod HBONE port; peers always dial 15008, so change it only in isolated tests")
    ports.add_argument("--explicit-proxy-port", type=int, default=DEFAULT_EXPLICIT_PROXY_PORT,
                       help="per-pod SOCKS5/HTTP proxy port (the pod's http_proxy/ALL_PROXY point here)")
    parser.add_argument("--drain-seconds", type=float, default=DEFAULT_DRAIN_SECONDS,
                        help="how long open connections may finish after /quitquitquit or SIGTERM")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes serving this node's pods (one core each); the pod ports are shared "
                             "with SO_REUSEPORT, the admin ports and /metrics stay with the main process")
    parser.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    capture = parser.add_argument_group("capture")
    capture.add_argument("--capture", choices=("proxy", "netns"), default="proxy",
                         help="proxy: listen on each local pod's own address (15008, 15080); netns: serve the "
                              "pods the node agent hands over, with listeners inside their network namespaces")
    capture.add_argument("--zds-socket", type=Path,
                         help="netns mode: the Unix socket the node agent connects to (ZDS)")
    capture.add_argument("--dns-upstream", metavar="HOST:PORT",
                         help="netns mode: where the pods' DNS proxy forwards non-mesh names "
                              "(default: the node's /etc/resolv.conf; none there: NXDOMAIN)")
    return parser


def parse_args(argv: Sequence[str]) -> ZtunnelConfig:
    """Parse and check ``argv``; raise :class:`ConfigError` naming every problem at once.

    argparse itself exits on unknown flags and missing required ones (printing usage), as CLIs do.
    """
    ns = _parser().parse_args(list(argv))
    config = ZtunnelConfig(
        node=ns.node,
        node_address=ns.node_address,
        local_config=ns.local_config,
        cert_dir=ns.cert_dir,
        istiod=ns.istiod,
        token_file=ns.token_file,
        root_cert=ns.root_cert,
        admin_port=ns.admin_port,
        metrics_port=ns.metrics_port,
        ready_port=ns.ready_port,
        hbone_port=ns.hbone_port,
        explicit_proxy_port=ns.explicit_proxy_port,
        drain_seconds=ns.drain_seconds,
        log_level=ns.log_level,
        workers=ns.workers,
        worker_index=ns.worker_index,
        capture=ns.capture,
        zds_socket=ns.zds_socket,
        dns_upstream=ns.dns_upstream,
    )
    problems = check(config)
    if problems:
        raise ConfigError("invalid ztunnel settings: " + "; ".join(problems), detail=problems[0])
    return config


def check(config: ZtunnelConfig) -> list[str]:
    """Every reason ``config`` cannot run (empty when it can). Pure: files are not opened here."""
    problems: list[str] = []
    if not config.node:
        problems.append("--node must not be empty")
    try:
        ipaddress.ip_address(config.node_address)
    except ValueError:
        problems.append(f"--node-address {config.node_address!r} is not an IP address")
    static = config.local_config is not None or config.cert_dir is not None
    pushed = config.istiod is not None or config.token_file is not None or config.root_cert is not None
    if static and pushed:
        problems.append("use either --local-config/--cert-dir or --istiod/--token-file/--root-cert, not both")
    elif static and (config.local_config is None or config.cert_dir is None):
        problems.append("--local-config and --cert-dir go together (state and certificates both come from files)")
    elif pushed and (config.istiod is None or config.token_file is None or config.root_cert is None):
        problems.append("--istiod needs --token-file and --root-cert")
    elif not static and not pushed:
        problems.append("give a state source: --local-config FILE --cert-dir DIR, or --istiod URL")
    if config.istiod is not None and not config.istiod.startswith(("wss://", "ws://")):
        problems.append(f"--istiod {config.istiod!r} must be a ws:// or wss:// URL")
    for flag, port in (
        ("--admin-port", config.admin_port),
        ("--metrics-port", config.metrics_port),
        ("--ready-port", config.ready_port),
        ("--hbone-port", config.hbone_port),
        ("--explicit-proxy-port", config.explicit_proxy_port),
    ):
        if not 0 <= port <= 65535:
            problems.append(f"{flag} {port} is outside 0..65535")
    if config.workers < 1:
        problems.append(f"--workers {config.workers} must be at least 1")
    if config.workers > 1 and 0 in (config.hbone_port, config.explicit_proxy_port):
        problems.append("--workers > 1 needs fixed --hbone-port and --explicit-proxy-port: workers share "
                        "each pod's listening port, so the kernel cannot pick a different one per process")
    if config.worker_index < 0 or (config.worker_index > 0 and config.workers != 1):
        problems.append("--worker-index is set by the main ztunnel for its workers; do not combine it with --workers")
    if config.capture == "netns" and config.zds_socket is None:
        problems.append("--capture netns needs --zds-socket (where the node agent connects)")
    if config.capture == "netns" and config.workers > 1:
        problems.append("--workers applies to proxy mode; netns mode serves pods through one process")
    if config.zds_socket is not None and config.capture != "netns":
        problems.append("--zds-socket is only used with --capture netns")
    if config.dns_upstream is not None and config.dns_upstream.rpartition(":")[2].isdigit() is False:
        problems.append(f"--dns-upstream {config.dns_upstream!r} must be HOST:PORT")
    if config.drain_seconds < 0:
        problems.append(f"--drain-seconds {config.drain_seconds} must not be negative")
    try:
        normalize_level(config.log_level)
    except InvalidLogLevel:
        problems.append(f"--log-level {config.log_level!r} is not one of {', '.join(LEVELS)}")
    return problems
