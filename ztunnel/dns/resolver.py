"""What the DNS proxy answers: a sans-IO decision per query.

Istio's ztunnel DNS proxy answers for names it knows from mesh state — Service hostnames
(``svc.ns.svc.cluster.local``) — and forwards everything else to the node's upstream resolver. A stub
resolver has already applied the pod's search list (``ns.svc.cluster.local svc.cluster.local
cluster.local``), so a short name arrives here as full candidates; names inside the cluster domain
that the mesh does not know are answered NXDOMAIN authoritatively instead of leaking to upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from ztunnel.dns.message import CLASS_IN, Query, RCode, RRType

CLUSTER_DOMAIN = "cluster.local"

# hostname → addresses (VIPs, or pod IPs for headless services); empty when unknown.
HostLookup = Callable[[str], Sequence[str]]


@attrs.frozen
class Answer:
    """Answer locally with ``rcode`` and ``addresses`` (filtered to the asked type when encoding)."""

    rcode: RCode
    addresses: tuple[str, ...] = ()


@attrs.frozen
class Forward:
    """Send the original packet to the upstream resolver and relay its answer."""


Decision = Answer | Forward


def search_domains(namespace: str, cluster_domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The search list a pod in ``namespace`` gets, as Kubernetes writes it into resolv.conf."""
    return [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]


def decide(
    query: Query, lookup: HostLookup, *, has_upstream: bool, cluster_domain: str = CLUSTER_DOMAIN
) -> Decision:
    question = query.question
    if query.opcode != 0:
        return Answer(RCode.NOTIMP)
    if question.qclass != CLASS_IN:
        return Answer(RCode.REFUSED)
    name = question.name.rstrip(".").lower()
    in_cluster = name == cluster_domain or name.endswith("." + cluster_domain)
    addresses = tuple(lookup(name)) if in_cluster else ()
    if addresses:
        if question.qtype in (RRType.A, RRType.AAAA, RRType.ANY):
            return Answer(RCode.NOERROR, addresses)
        return Answer(RCode.NOERROR)  # the name exists, it has no record of that type (NODATA)
    if in_cluster:
        return Answer(RCode.NXDOMAIN)
    if has_upstream:
        return Forward()
    return Answer(RCode.NXDOMAIN)
