"""Checks that need the whole loaded set rather than one document.

* The same kind/namespace/name defined twice is an error: which one wins would depend on file order.
* A VirtualService destination naming a subset that no DestinationRule for that host defines is a
  *warning*, as in Istio: the configuration is accepted and the data plane answers 503 for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from schemas.common import namespace_of
from schemas.errors import PathPart, Problem, Severity
from schemas.networking import Destination, DestinationRule, VirtualService, subset_names

CLUSTER_DOMAIN = "cluster.local"


def service_fqdn(host: str, namespace: str) -> str:
    """Istio's short names: ``reviews`` in namespace ``bookinfo`` is ``reviews.bookinfo.svc.<domain>``."""
    if "*" in host:
        return host
    parts = host.split(".")
    if len(parts) == 1:
        return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"
    if len(parts) == 2:
        return f"{host}.svc.{CLUSTER_DOMAIN}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{host}.{CLUSTER_DOMAIN}"
    return host


def duplicate_problems(keys: Sequence[tuple[str, str, str]]) -> dict[int, Problem]:
    """Index → problem for every definition after the first of the same kind/namespace/name."""
    first: dict[tuple[str, str, str], int] = {}
    out: dict[int, Problem] = {}
    for i, key in enumerate(keys):
        if key in first:
            kind, namespace, name = key
            message = f"{kind} {namespace}/{name} is defined more than once; later definitions are rejected"
            out[i] = Problem(path=("metadata", "name"), message=message)
        else:
            first[key] = i
    return out


def _destinations(vs: VirtualService) -> Iterator[tuple[tuple[PathPart, ...], Destination]]:
    for i, http in enumerate(vs.spec.http):
        for j, route in enumerate(http.route):
            yield ("spec", "http", i, "route", j, "destination"), route.destination
        if http.mirror is not None:
            yield ("spec", "http", i, "mirror"), http.mirror
    for i, tcp in enumerate(vs.spec.tcp):
        for j, tcp_route in enumerate(tcp.route):
            yield ("spec", "tcp", i, "route", j, "destination"), tcp_route.destination


def undefined_subset_problems(vs: VirtualService, rules: Sequence[DestinationRule]) -> list[Problem]:
    subsets: dict[str, set[str]] = {}
    for dr in rules:
        host = service_fqdn(dr.spec.host, namespace_of(dr.metadata))
        subsets.setdefault(host, set()).update(subset_names(dr))
    out = []
    for path, destination in _destinations(vs):
        if destination.subset is None:
            continue
        host = service_fqdn(destination.host, namespace_of(vs.metadata))
        if destination.subset not in subsets.get(host, set()):
            message = (
                f'subset "{destination.subset}" is not defined by any DestinationRule for {host}; '
                "requests routed to it will get 503"
            )
            out.append(Problem(path=(*path, "subset"), message=message, severity=Severity.WARNING))
    return out
