"""Node authorization's view of the mesh: which identities have a workload on which node.

The CSR service asks :meth:`TranslatedPlacement.has_workload_on_node` for every certificate request;
the answer comes from the newest *translated* workloads (what proxies are told), never from raw user
resources, so a ztunnel can obtain exactly the identities istiod_lite has scheduled on its node.
Workload bodies are decoded with the discovery schema so defaults (trust domain, service account)
are applied the same way the proxies apply them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import get_logger
from schemas.discovery import DiscoveryDecodeError, Workload, from_json

_log = get_logger("istiod_lite.placement")


class TranslatedPlacement:
    """A :class:`~istiod_lite.csr_service.WorkloadPlacement` rebuilt from each translated snapshot."""

    def __init__(self) -> None:
        self._nodes: dict[str, frozenset[str]] = {}

    def update(self, workloads: Mapping[str, JSON]) -> None:
        """Replace the view with ``workloads`` (pushed ``workload`` bodies by uid)."""
        nodes: dict[str, set[str]] = defaultdict(set)
        for uid, body in workloads.items():
            try:
                workload = from_json(Workload, body)
            except DiscoveryDecodeError as exc:  # the proxies would NACK it too; it grants nothing
                _log.warning("workload ignored for node authorization", uid=uid, error=str(exc))
                continue
            if workload.node:
                nodes[workload.identity].add(workload.node)
        self._nodes = {identity: frozenset(found) for identity, found in nodes.items()}

    def has_workload_on_node(self, identity: str, node: str) -> bool:
        return node in self._nodes.get(identity, ())

    def identities(self) -> dict[str, list[str]]:
        """identity → sorted nodes (for the config dump)."""
        return {identity: sorted(nodes) for identity, nodes in sorted(self._nodes.items())}
