"""INTERIM: how `meshctl up` feeds a waypoint until the waypoint process speaks istiod_lite's push.

Today ``python -m waypoint`` reads its view from a file (``--config``, re-read on change) and its
certificate from files (``--cert-dir``), while istiod_lite publishes one ``waypoint`` resource per
waypoint (``istiod_lite.translate.view``) whose JSON differs from the file's shape. Until the waypoint
subscribes to that resource itself, this bridge, run by the runner for each waypoint:

* issues the waypoint's certificate from the mesh CA in the state directory (the runner owns that
  directory — on a cluster the waypoint would request it from istiod_lite's CA like a ztunnel does);
* follows istiod_lite's ``/debug/config_dump`` and rewrites the view file whenever the translated
  view changes, converting istiod_lite's shape to the waypoint's (:func:`file_view`).

Delete this module once ``python -m waypoint --istiod ...`` exists; the runner then starts it with the
same flags as a ztunnel.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from istiod_lite.translate import view as pushed
from istiod_lite.translate.process_view import to_process_view
from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.identity.certs import certificates_pem, private_key_pem
from meshcore.identity.spiffe import Identity
from meshctl.runner.inventory import write_json_atomically
from waypoint import view as served

POLL_INTERVAL = 0.25  # a weight change reaches the waypoint within push debounce + this + its reload
def file_view(view: pushed.WaypointView) -> dict[str, Any]:
    """istiod_lite's pushed view → the waypoint's ``--config`` JSON (one binding per service port).

    The shape conversion itself is :func:`istiod_lite.translate.process_view.to_process_view`; this adds
    the content version the waypoint reports in its config dump.
    """
    document = served.view_to_json(to_process_view(view))
    document["version"] = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]
    return document


def issue_certificates(state_dir: Path, identity: str, cert_dir: Path) -> None:
    """``cert_dir/root-cert.pem`` and ``cert_dir/<ns>/<sa>/{cert-chain,key}.pem`` from the mesh CA."""
    parsed = Identity.parse(identity)
    ca = CertificateAuthority.load_or_create(state_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_workload(key.public_key(), parsed)
    where = cert_dir / parsed.namespace / parsed.service_account
    where.mkdir(parents=True, exist_ok=True)
    (cert_dir / "root-cert.pem").write_bytes(ca.trust_bundle_pem())
    (where / "cert-chain.pem").write_bytes(certificates_pem(issued.chain))
    key_path = where / "key.pem"
    key_path.touch(mode=0o600)
    key_path.write_bytes(private_key_pem(key))


async def fetch_view(admin: str, key: str) -> pushed.WaypointView | None:
    """The translated view of waypoint ``key`` (namespace/name), or None if istiod_lite has none yet."""
    host, _, port = admin.rpartition(":")
    try:
        response = await http_request(host, int(port), "GET", "/debug/config_dump", timeout=5)
        body = response.json().get("snapshot", {}).get("waypoint", {}).get(key)
    except (AdminRequestFailed, ValueError, AttributeError):
        return None
    return None if body is None else pushed.from_json(body)


class WaypointBridge:
    """Keeps one waypoint's view file in step with istiod_lite (see the module docstring)."""

    def __init__(self, admin: str, key: str, view_path: Path) -> None:
        self.admin = admin
        self.key = key
        self.view_path = view_path
        self._written: dict[str, Any] | None = None

    async def refresh(self) -> pushed.WaypointView | None:
        view = await fetch_view(self.admin, self.key)
        if view is not None:
            document = file_view(view)
            if document != self._written:
                write_json_atomically(self.view_path, document)
                self._written = document
        return view

    async def run(self) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            await self.refresh()
