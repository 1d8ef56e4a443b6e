"""What ztunnel's admin ports say: readiness (15021) and ``/config_dump`` (15000).

Plain functions over plain data so each rule is a table row in a test: the :class:`~ztunnel.proxy.Ztunnel`
shell gathers the facts and mounts these on :class:`meshcore.admin.ports.ComponentPorts` (which also
serves ``/metrics``, ``/logging`` and ``/quitquitquit``).

Ready means what DESIGN §3 asks: not draining, the first state sync done, a certificate for every
local identity, and the listeners of every local HBONE workload running. Until then 15021 answers 503
with the first thing still missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs


@attrs.frozen(kw_only=True)
class ReadinessFacts:
    draining: bool
    generation: int
    missing_certificates: tuple[str, ...]
    pending_listeners: tuple[str, ...]
    listener_errors: Mapping[str, str] = attrs.field(factory=dict)
    pending_workers: tuple[str, ...] = ()
    waiting_for_node_agent: bool = False


def readiness(facts: ReadinessFacts) -> str | None:
    """None when ready, else why not (the 503 body)."""
    if facts.draining:
        return "draining"
    if facts.generation == 0:
        return "waiting for the first state sync"
    if facts.missing_certificates:
        return f"certificates missing for {', '.join(sorted(facts.missing_certificates))}"
    if facts.listener_errors:
        return "; ".join(f"{uid}: {error}" for uid, error in sorted(facts.listener_errors.items()))
    if facts.pending_listeners:
        return f"listeners not running for {', '.join(sorted(facts.pending_listeners))}"
    if facts.waiting_for_node_agent:
        return "waiting for the node agent (no ZDS snapshot yet)"
    if facts.pending_workers:
        return f"not serving: {', '.join(facts.pending_workers)}"
    return None


def config_dump(
    *,
    node: str,
    node_address: str,
    snapshot: Mapping[str, Any],
    certificates: Iterable[Mapping[str, Any]],
    listeners: Iterable[Mapping[str, Any]],
    listener_errors: Mapping[str, str],
    pool: Mapping[str, Any],
    draining: bool,
    open_connections: int,
    workers: Iterable[Mapping[str, Any]] = (),
    worker_index: int = 0,
    captured_pods: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``/config_dump`` document: state as pushed (JSON form), certificates with state, listeners."""
    return {
        "node": node,
        "node_address": node_address,
        "generation": snapshot["generation"],
        "synced": snapshot["synced"],
        "workloads": snapshot["workloads"],
        "services": snapshot["services"],
        "policies": snapshot["policies"],
        "certificates": list(certificates),
        "listeners": list(listeners),
        "listener_errors": dict(listener_errors),
        "pool": dict(pool),
        "draining": draining,
        "open_connections": open_connections,
        "worker_index": worker_index,
        "workers": list(workers),
        **({"captured_pods": dict(captured_pods)} if captured_pods is not None else {}),
    }
