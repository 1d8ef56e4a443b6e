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

from meshcore.errors import MeshError
from meshcore.identity.ca_client import CaClient, control_plane_context
from meshcore.identity.manager import CertificateManager
from meshcore.push.client import PushClient, parse_push_url
from meshcore.push.protocol import JSON
from schemas.discovery import RESOURCE_TYPES
from ztunnel.config import ZtunnelConfig
from ztunnel.state import ProxyState


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
