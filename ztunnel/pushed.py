"""State and certificates from istiod_lite (``--istiod``): the push client and the CA client, wired.

The push client (:mod:`meshcore.push.client`) hands each push to :class:`PushedState`, which applies
it to :class:`~ztunnel.state.ProxyState` transactionally — a push that does not decode or conflicts
raises, and the client NACKs it with that text while the last good state stays in force — and then
tells the ztunnel that state changed. Certificates come from istiod_lite's CA through a
:class:`~meshcore.identity.manager.CertificateManager` (one per identity with a local workload,
refreshed at half-life). Both authenticate with the node's bearer token and trust only the mesh root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from meshcore.errors import MeshError
from meshcore.identity.ca_client import CaClient, control_plane_context
from meshcore.identity.manager import CertificateManager
from meshcore.identity.spiffe import Identity
from meshcore.push.client import PushClient, parse_push_url
from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import get_logger
from schemas.discovery import RESOURCE_TYPES
from ztunnel.certificates import CertificateStore
from ztunnel.config import ZtunnelConfig
from ztunnel.state import ProxyState

CERT_FETCH_TIMEOUT = 10.0
CERT_REFRESH_POLL = 10.0

_log = get_logger("ztunnel.pushed")


class ControlPlaneSettingsError(MeshError):
    hint = "check --token-file and --root-cert: {detail}"


class PushedState:
    """The push client's applier: one push → one ``ProxyState.apply`` → a change notification."""

    def __init__(self, state: ProxyState, on_change: Callable[[], None]) -> None:
        self._state = state
        self._on_change = on_change

    def apply(self, type_name: str, upserts: dict[str, JSON], removed: list[str], full: bool) -> None:
        self._state.apply(type_name, list(upserts.values()), removed, replace=full)
        self._on_change()


def _read(path: Path | None, what: str) -> bytes:
    if path is None:
        raise ControlPlaneSettingsError(f"{what} is required with --istiod", detail=f"{what} is missing")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ControlPlaneSettingsError(f"cannot read {what} {path}: {exc.strerror}", detail=str(path)) from None


def connect_control_plane(
    config: ZtunnelConfig, state: ProxyState, on_change: Callable[[], None]
) -> tuple[PushClient, CertificateManager]:
    """The push client and certificate manager for ``config.istiod`` (run both in a nursery)."""
    assert config.istiod is not None
    token = _read(config.token_file, "--token-file").decode().strip()
    roots = _read(config.root_cert, "--root-cert")
    target = parse_push_url(config.istiod)
    tls = control_plane_context(roots) if config.istiod.startswith("wss://") else None
    push = PushClient(config.istiod, token, tls, tuple(RESOURCE_TYPES), PushedState(state, on_change))
    manager = CertificateManager(CaClient((target.host, target.port), token=token, roots_pem=roots))
    return push, manager


async def fetch_missing(store: CertificateStore, manager: CertificateManager, identities: set[Identity]) -> None:
    """Fetch the certificates ``store`` lacks among ``identities``, all at once, each bounded."""

    async def fetch(identity: Identity) -> None:
        with trio.move_on_after(CERT_FETCH_TIMEOUT):
            try:
                store.install(await manager.fetch(identity))
            except MeshError as exc:
                store.record_error(identity, str(exc))
            return
        store.record_error(identity, f"istiod_lite did not sign within {CERT_FETCH_TIMEOUT}s")

    async with trio.open_nursery() as fetches:
        for identity in identities:
            if not store.has(identity):
                fetches.start_soon(fetch, identity)


async def follow_renewals(
    store: CertificateStore, manager: CertificateManager, identities: Callable[[], set[Identity]]
) -> None:
    """Load certificates the manager renewed (at half-life) into the live TLS contexts."""
    while True:
        await trio.sleep(CERT_REFRESH_POLL)
        for identity in identities():
            current = manager.current(identity)
            if current is not None and current.serial != store.serial(identity):
                store.install(current)
                _log.info("certificate_renewed", identity=str(identity), serial=current.serial)
