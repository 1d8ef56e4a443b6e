"""Node authorization's view of the mesh: which identities have a workload on which node.

The CSR service asks :meth:`TranslatedPlacement.has_workload_on_node` for every certificate request;
the answer comes from the newest *translated* workloads (what proxies are told), never from raw user
resources, so a ztunnel can obtain exactly the identities istiod_lite has scheduled on its node.
Only the fields that make an identity and a placement are read, with the discovery schema's defaults
(trust domain ``cluster.local``, service account ``default``), so the view does not depend on how the
rest of a body is represented in memory (enum members or their strings).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import get_logger
from schemas.discovery import DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN

_log = get_logger("istiod_lite.placement")


class TranslatedPlacement:
    """A :class:`~istiod_lite.csr_service.WorkloadPlacement` rebuilt from each translated snapshot."""

    def __init__(self) -> None:
        self._nodes: dict[str, frozenset[str]] = {}

    def update(self, workloads: Mapping[str, JSON]) -> None:
        """Replace the view with ``workloads`` (pushed ``workload`` bodies by uid)."""
        nodes: dict[str, set[str]] = defaultdict(set)
        for uid, body in workloads.items():
            identity, node = _placement(body)
            if identity is None:  # the proxies would NACK it too; it grants nothing
                _log.warning("workload ignored for node authorization", uid=uid, reason="no namespace")
            elif node:
                nodes[identity].add(node)
        self._nodes = {identity: frozenset(found) for identity, found in nodes.items()}

    def has_workload_on_node(self, identity: str, node: str) -> bool:
        return node in self._nodes.get(identity, ())

    def identities(self) -> dict[str, list[str]]:
        """identity → sorted nodes (for the config dump)."""
        return {identity: sorted(nodes) for identity, nodes in sorted(self._nodes.items())}


def _text(body: Mapping[str, JSON], field: str, default: str) -> str:
    value = body.get(field)
    return str(value) if isinstance(value, str) and value else default


def _placement(body: JSON) -> tuple[str | None, str]:
    """(SPIFFE identity, node) of one workload body; identity None if the body names no namespace."""
    if not isinstance(body, Mapping) or not _text(body, "namespace", ""):
        return None, ""
    identity = (
        f"spiffe://{_text(body, 'trust_domain', DEFAULT_TRUST_DOMAIN)}/ns/{body['namespace']}"
        f"/sa/{_text(body, 'service_account', DEFAULT_SERVICE_ACCOUNT)}"
    )
    return identity, _text(body, "node", "")
