"""``--istiod``: the waypoint's certificate from istiod_lite's CA and its view from istiod_lite's push.

This is how a waypoint runs on Kubernetes (the waypoint controller's Deployment starts it this way):

* the certificate for ``--identity`` comes from the CA over the control endpoint, authenticated with the
  pod's projected ServiceAccount token (``--token-file``; the CA lets a waypoint pod obtain exactly its
  own identity), and is renewed at half-life; a renewed certificate is loaded into the live contexts;
* the view comes from the push protocol's ``waypoint`` type: istiod_lite publishes one translated view
  per waypoint Gateway, and this waypoint serves the one whose identity is its own. A push that does
  not decode is refused (NACK, with the reason) and the view in force stays — as with a bad ``--config``.

Both authenticate istiod_lite against ``--root-cert`` (the mesh root).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from meshcore.errors import MeshError
from meshcore.identity.ca_client import CaClient, control_plane_context
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.manager import CertificateManager
from meshcore.identity.spiffe import Identity
from meshcore.push.client import PushClient, parse_push_url
from meshcore.push.protocol import JSON
from waypoint import pushed
from waypoint.config import ConfigError, WaypointSettings
from waypoint.view import WaypointView, view_from_json, view_to_json

log = structlog.get_logger("waypoint.control_plane")

CERT_FETCH_TIMEOUT = 30.0
RENEWAL_POLL = 10.0
TYPES = (pushed.TYPE_NAME,)


def _read(path: Path | None, flag: str) -> bytes:
    if path is None:
        raise ConfigError(f"{flag} is required with --istiod", detail=f"pass {flag}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror}", detail=f"check {path}") from None


def served_view(body: JSON, *, source: str) -> WaypointView:
    """One pushed ``waypoint`` resource → the view this process serves (same conversion as the file mode)."""
    document = view_to_json(pushed.to_process_view(pushed.from_json(body)))
    document["version"] = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
    return view_from_json(document, source=source)


class ControlPlaneLink:
    """Push applier and certificate owner of one waypoint; ``await nursery.start(link.run)``."""

    def __init__(
        self,
        settings: WaypointSettings,
        *,
        on_view: Callable[[WaypointView], None],
        on_certificate: Callable[[WorkloadCertificate], None],
    ) -> None:
        assert settings.istiod is not None
        self._identity = Identity.parse(settings.identity)
        self._on_view = on_view
        self._on_certificate = on_certificate
        token = _read(settings.token_file, "--token-file").decode().strip()
        roots = _read(settings.root_cert, "--root-cert")
        target = parse_push_url(settings.istiod)
        tls = control_plane_context(roots) if settings.istiod.startswith("wss://") else None
        self.push = PushClient(settings.istiod, token, tls, TYPES, self)
        self.manager = CertificateManager(CaClient((target.host, target.port), token=token, roots_pem=roots))
        self.view_key: str | None = None

    def apply(self, type_name: str, upserts: dict[str, JSON], removed: list[str], full: bool) -> None:
        """The push client's applier: pick our view; raising refuses the push (NACK) and keeps the last."""
        for key, body in upserts.items():
            if not isinstance(body, dict) or body.get("identity") != self._identity.uri:
                continue
            try:
                view = served_view(body, source=f"pushed waypoint {key}")
            except MeshError as exc:
                raise ValueError(f"waypoint view {key}: {exc}") from exc
            self.view_key = key
            self._on_view(view)
            return
        if self.view_key in removed:
            log.warning("view_withdrawn", key=self.view_key, action="keeping the last view until a new one")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch the certificate (started once it is in hand), then follow pushes and renewals."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.manager.run)
            self.manager.workload_added(self._identity, "waypoint")
            with trio.fail_after(CERT_FETCH_TIMEOUT):
                certificate = await self.manager.fetch(self._identity)
            self._on_certificate(certificate)
            await nursery.start(self.push.run)
            task_status.started()
            serial = certificate.serial
            while True:
                await trio.sleep(RENEWAL_POLL)
                current = self.manager.current(self._identity)
                if current is not None and current.serial != serial:
                    serial = current.serial
                    self._on_certificate(current)
                    log.info("certificate_renewed", identity=self._identity.uri, serial=serial)
