"""PeerAuthentication → DENY ``Authorization`` s, because ztunnel only knows authorization policies.

Istio's ambient design (architecture/ambient/peer-authentication.md): for each workload istiod works
out the *effective* mode — a selector policy in the workload's namespace, else the namespace-wide
policy, else the mesh-wide one in the root namespace, each level's ``UNSET`` inheriting from the one
above, PERMISSIVE when nothing is said — and turns STRICT into "deny traffic that carries no
principal" (``not_principals: [presence]``). ``portLevelMtls`` refines that per workload port:

* STRICT with PERMISSIVE ports → DENY when no principal AND the port is not one of them;
* PERMISSIVE with STRICT ports → DENY when no principal AND the port is one of them.

As in Istio, selector policies in the root namespace are not workload policies (they are ignored).

A plain STRICT workload references one shared policy (``<root>/istio_converted_static_strict``); a
workload with port exceptions references ``<ns>/converted_peer_authentication_<policy name>``.
``DISABLE`` cannot switch ambient mTLS off; it enforces nothing, like PERMISSIVE.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from istiod_lite.translate.inputs import Inventory, PodInfo, labels_match
from schemas import security
from schemas.common import namespace_of
from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, StringMatch

STATIC_STRICT = "istio_converted_static_strict"
CONVERTED_PREFIX = "converted_peer_authentication_"
Mode = security.MTLSMode

_NO_PRINCIPAL = Clause(matches=(Match(not_principals=(StringMatch(presence=True),)),))


@attrs.frozen(kw_only=True)
class Effective:
    mode: Mode
    ports: Mapping[int, Mode]
    source: security.PeerAuthentication | None  # the selector policy that set port modes, if any


def _mode(policy: security.PeerAuthentication | None, inherited: Mode) -> Mode:
    if policy is None or policy.spec.mtls is None or policy.spec.mtls.mode is Mode.UNSET:
        return inherited
    return policy.spec.mtls.mode


def _wide(inventory: Inventory, namespace: str) -> security.PeerAuthentication | None:
    for policy in inventory.peer_authentications:
        if namespace_of(policy.metadata) == namespace and policy.spec.selector is None:
            return policy
    return None


def _selecting(inventory: Inventory, pod: PodInfo) -> security.PeerAuthentication | None:
    for policy in inventory.peer_authentications:
        selector = policy.spec.selector
        if (
            selector is not None
            and namespace_of(policy.metadata) == pod.namespace != inventory.root_namespace
            and labels_match(selector.match_labels, pod.labels)
        ):
            return policy
    return None


def effective(inventory: Inventory, pod: PodInfo) -> Effective:
    mode = _mode(_wide(inventory, inventory.root_namespace), Mode.PERMISSIVE)
    mode = _mode(_wide(inventory, pod.namespace), mode)
    selecting = _selecting(inventory, pod)
    mode = _mode(selecting, mode)
    ports = {}
    if selecting is not None:
        ports = {
            port: peer.mode for port, peer in selecting.spec.port_level_mtls.items() if peer.mode is not Mode.UNSET
        }
    return Effective(mode=mode, ports=ports, source=selecting)


def _strict(mode: Mode) -> bool:
    return mode is Mode.STRICT


def static_strict(root_namespace: str) -> Authorization:
    return Authorization(
        name=STATIC_STRICT,
        namespace=root_namespace,
        scope=Scope.WORKLOAD_SELECTOR,
        action=Action.DENY,
        rules=(Rule(clauses=(_NO_PRINCIPAL,)),),
    )


def policy_for(inventory: Inventory, pod: PodInfo) -> Authorization | None:
    """The DENY policy this workload must reference, or None when nothing is enforced."""
    found = effective(inventory, pod)
    exceptions = tuple(sorted(p for p, m in found.ports.items() if _strict(m) != _strict(found.mode)))
    if not exceptions:
        return static_strict(inventory.root_namespace) if _strict(found.mode) else None
    assert found.source is not None  # port modes only come from a selector policy
    if _strict(found.mode):
        ports = Clause(matches=(Match(not_destination_ports=exceptions),))
    else:
        ports = Clause(matches=(Match(destination_ports=exceptions),))
    return Authorization(
        name=CONVERTED_PREFIX + found.source.metadata.name,
        namespace=namespace_of(found.source.metadata),
        scope=Scope.WORKLOAD_SELECTOR,
        action=Action.DENY,
        rules=(Rule(clauses=(_NO_PRINCIPAL, ports)),),
    )
