"""The waypoint process's settings, read from the command line and checked before anything binds.

``python -m waypoint --address 127.X.Y.Z --identity spiffe://cluster.local/ns/NS/sa/SA`` plus:

* certificates: ``--cert-dir DIR`` (``root-cert.pem`` and ``<ns>/<sa>/{cert-chain,key}.pem``, the layout
  ztunnel's ``--cert-dir`` uses) or the three files ``--cert-chain``, ``--key``, ``--root-cert``;
* the view to serve: ``--config FILE`` (JSON or YAML :class:`~waypoint.view.WaypointView`), re-read
  whenever the file changes; a broken edit is logged and the last good view stays in force;
* or both from istiod_lite: ``--istiod wss://HOST:PORT --token-file F --root-cert F`` — the certificate
  from its CA, the view from its push (:mod:`waypoint.control_plane`; how it runs on Kubernetes).

Ports default to the standard ones (DESIGN §3); ``0`` means any free port, and the ready line reports
what was bound.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from pathlib import Path

import attrs

from meshcore.errors import MeshError
from meshcore.identity.errors import IdentityError
from meshcore.identity.spiffe import Identity

DEFAULT_ADMIN_PORT = 15000
DEFAULT_METRICS_PORT = 15020
DEFAULT_READY_PORT = 15021
DEFAULT_HBONE_PORT = 15008


class ConfigError(MeshError):
    """The command line does not describe a waypoint that can run."""

    hint = "{detail}; see `python -m waypoint --help`"


@attrs.frozen(kw_only=True)
class WaypointSettings:
    address: str
    identity: str
    config: Path | None = None
    istiod: str | None = None
    token_file: Path | None = None
    netns: str | None = None  # serve HBONE and dial upstreams inside this network namespace (name or path)
    admin_address: str | None = None  # where admin/metrics/ready bind (default: --address)
    cert_dir: Path | None = None
    cert_chain: Path | None = None
    key: Path | None = None
    root_cert: Path | None = None
    hbone_port: int = DEFAULT_HBONE_PORT
    admin_port: int = DEFAULT_ADMIN_PORT
    metrics_port: int = DEFAULT_METRICS_PORT
    ready_port: int = DEFAULT_READY_PORT
    otlp_endpoint: str | None = None
    reload_interval: float = 0.2
    drain_seconds: float = 5.0
    log_level: str = "info"

    def credential_files(self) -> tuple[Path, Path, Path]:
        """(chain, key, roots) paths, from ``--cert-dir`` or the three explicit flags."""
        if self.cert_dir is not None:
            identity = Identity.parse(self.identity)
            where = self.cert_dir / identity.namespace / identity.service_account
            return where / "cert-chain.pem", where / "key.pem", self.cert_dir / "root-cert.pem"
        assert self.cert_chain is not None and self.key is not None and self.root_cert is not None
        return self.cert_chain, self.key, self.root_cert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m waypoint", description="The mesh's L7 proxy (waypoint).")
    parser.add_argument("--address", required=True, help="this waypoint's IP: HBONE, metrics and ready bind here")
    parser.add_argument("--identity", required=True, help="the waypoint's SPIFFE ID (its certificate's URI SAN)")
    parser.add_argument("--config", type=Path, help="WaypointView JSON/YAML, re-read on change")
    pushed = parser.add_argument_group("from istiod_lite (instead of --config and certificate files)")
    pushed.add_argument("--istiod", help="control endpoint, wss://host:port: certificate from its CA, view pushed")
    pushed.add_argument("--token-file", type=Path, help="bearer token (on Kubernetes: the projected SA token)")
    certs = parser.add_argument_group("certificates")
    certs.add_argument("--cert-dir", type=Path, help="root-cert.pem and <ns>/<sa>/{cert-chain,key}.pem")
    certs.add_argument("--cert-chain", type=Path)
    certs.add_argument("--key", type=Path)
    certs.add_argument("--root-cert", type=Path, help="the mesh root (also what istiod_lite is checked against)")
    place = parser.add_argument_group("network namespace (the local runner's netns mode)")
    place.add_argument("--netns", help="open the HBONE listener and upstream connections in this network namespace "
                                       "(an `ip netns` name or a path); the control plane and admin stay here")
    place.add_argument("--admin-address", help="address of the admin, metrics and ready ports (default: --address)")
    ports = parser.add_argument_group("ports (0 = any free port)")
    ports.add_argument("--hbone-port", type=int, default=DEFAULT_HBONE_PORT)
    ports.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT)
    ports.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT)
    ports.add_argument("--ready-port", type=int, default=DEFAULT_READY_PORT)
    parser.add_argument("--otlp-endpoint", help="export spans as OTLP/HTTP JSON to this http:// URL")
    parser.add_argument("--reload-interval", type=float, default=0.2, help="seconds between --config checks")
    parser.add_argument("--drain-seconds", type=float, default=5.0)
    parser.add_argument("--log-level", default="info")
    return parser


def parse_args(argv: Sequence[str]) -> WaypointSettings:
    """Parse and check ``argv``; raise :class:`ConfigError` naming every problem at once."""
    ns = _parser().parse_args(list(argv))
    settings = WaypointSettings(
        address=ns.address, identity=ns.identity, config=ns.config, istiod=ns.istiod, token_file=ns.token_file,
        netns=ns.netns, admin_address=ns.admin_address,
        cert_dir=ns.cert_dir,
        cert_chain=ns.cert_chain, key=ns.key, root_cert=ns.root_cert, hbone_port=ns.hbone_port,
        admin_port=ns.admin_port, metrics_port=ns.metrics_port, ready_port=ns.ready_port,
        otlp_endpoint=ns.otlp_endpoint, reload_interval=ns.reload_interval, drain_seconds=ns.drain_seconds,
        log_level=ns.log_level,
    )
    problems = check(settings)
    if problems:
        raise ConfigError("invalid waypoint settings: " + "; ".join(problems), detail=problems[0])
    return settings


def check(settings: WaypointSettings) -> list[str]:
    """Every reason ``settings`` cannot run (empty when they can). Pure: files are not opened here."""
    problems: list[str] = []
    try:
        ipaddress.ip_address(settings.address)
    except ValueError:
        problems.append(f"--address {settings.address!r} is not an IP address")
    if settings.admin_address is not None:
        try:
            ipaddress.ip_address(settings.admin_address)
        except ValueError:
            problems.append(f"--admin-address {settings.admin_address!r} is not an IP address")
    if settings.netns is not None and settings.admin_address is None:
        problems.append("--netns needs --admin-address: --address lives in the namespace, the admin ports do not")
    try:
        Identity.parse(settings.identity)
    except IdentityError as exc:
        problems.append(f"--identity: {exc}")
    files = (settings.cert_chain, settings.key, settings.root_cert)
    if settings.istiod is not None:
        if settings.config is not None or settings.cert_dir is not None or settings.cert_chain or settings.key:
            problems.append("with --istiod the view and certificate come from istiod_lite: drop --config, "
                            "--cert-dir, --cert-chain and --key")
        if settings.token_file is None or settings.root_cert is None:
            problems.append("--istiod needs --token-file and --root-cert")
        if not settings.istiod.startswith(("wss://", "ws://")):
            problems.append(f"--istiod {settings.istiod!r} must be a ws:// or wss:// URL")
    elif settings.config is None:
        problems.append("give a view: --config FILE, or --istiod URL with --token-file and --root-cert")
    elif settings.cert_dir is not None and any(f is not None for f in files):
        problems.append("use either --cert-dir or --cert-chain/--key/--root-cert, not both")
    elif settings.cert_dir is None and any(f is None for f in files):
        problems.append("give certificates: --cert-dir DIR, or all of --cert-chain, --key and --root-cert")
    for flag, port in (
        ("--hbone-port", settings.hbone_port),
        ("--admin-port", settings.admin_port),
        ("--metrics-port", settings.metrics_port),
        ("--ready-port", settings.ready_port),
    ):
        if not 0 <= port <= 65535:
            problems.append(f"{flag} {port} is outside 0..65535")
    if settings.reload_interval <= 0:
        problems.append(f"--reload-interval {settings.reload_interval} must be positive")
    if settings.drain_seconds < 0:
        problems.append(f"--drain-seconds {settings.drain_seconds} must not be negative")
    return problems
