"""L4 authorization as ztunnel enforces it: plain data in, a decision out.

Istio's order (AuthorizationPolicy reference): any matching DENY denies; if no ALLOW policy applies,
allow; otherwise some ALLOW must match. A policy matches when any rule matches; a rule when all its
clauses match; a clause when any of its matches does; a match when every field it sets is satisfied
(values of one field OR, a ``not_`` field must hit none of its values). A match with no fields at all
matches nothing, and a policy with no rules matches nothing — so an empty ALLOW policy denies all,
exactly as ``spec: {}`` does in Istio.

No sockets, no clock, no logging: the inbound shell logs the decision, ``meshctl authz check`` prints it.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import attrs

from schemas.discovery import Action, Authorization, Match, resource_key

SPIFFE_PREFIX = "spiffe://"
T = TypeVar("T")


@attrs.frozen(kw_only=True)
class ConnectionInfo:
    """What is known about an inbound connection at L4. ``source_identity`` is the peer's SPIFFE ID
    from its client certificate, or None for plaintext (then principal/namespace matches fail)."""

    source_ip: str
    destination_ip: str
    destination_port: int
    source_identity: str | None = None

    @property
    def principal(self) -> str:
        """Istio's principal form, ``cluster.local/ns/x/sa/y``; empty without a SPIFFE identity."""
        if self.source_identity is None or not self.source_identity.startswith(SPIFFE_PREFIX):
            return ""
        return self.source_identity.removeprefix(SPIFFE_PREFIX)

    @property
    def source_namespace(self) -> str:
        """The namespace named in the source identity (``<td>/ns/<ns>/sa/<sa>``), else empty."""
        parts = self.principal.split("/")
        if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
            return parts[2]
        return ""


class Reason(enum.StrEnum):
    DENY_MATCHED = "a DENY policy matched"
    NO_ALLOW_POLICY = "no ALLOW policy applies"
    ALLOW_MATCHED = "an ALLOW policy matched"
    NO_ALLOW_MATCHED = "no ALLOW policy matched"


@attrs.frozen(kw_only=True)
class Decision:
    """The verdict and why: ``policy`` is the ``ns/name`` that decided (None when no single policy did)."""

    allowed: bool
    reason: Reason
    policy: str | None = None

    def describe(self) -> str:
        verdict = "allow" if self.allowed else "deny"
        if self.policy is None:
            return f"{verdict}: {self.reason}"
        return f"{verdict}: {self.reason} ({self.policy})"


def evaluate(conn: ConnectionInfo, policies: Sequence[Authorization]) -> Decision:
    """Istio's order: any matching DENY denies; no ALLOW policy allows; else an ALLOW must match."""
    for policy in policies:
        if policy.action is Action.DENY and policy_matches(policy, conn):
            return Decision(allowed=False, reason=Reason.DENY_MATCHED, policy=resource_key(policy))
    allows = [policy for policy in policies if policy.action is Action.ALLOW]
    if not allows:
        return Decision(allowed=True, reason=Reason.NO_ALLOW_POLICY)
    for policy in allows:
        if policy_matches(policy, conn):
            return Decision(allowed=True, reason=Reason.ALLOW_MATCHED, policy=resource_key(policy))
    return Decision(allowed=False, reason=Reason.NO_ALLOW_MATCHED)


def policy_matches(policy: Authorization, conn: ConnectionInfo) -> bool:
    return any(
        all(any(match_matches(m, conn) for m in clause.matches) or not clause.matches for clause in rule.clauses)
        for rule in policy.rules
    )


def match_matches(match: Match, conn: ConnectionInfo) -> bool:
    """Every field the match sets must hold; an empty match is skipped (matches nothing), as in ztunnel."""
    if match.is_empty():
        return False
    principal, namespace = conn.principal, conn.source_namespace
    source_ip = ipaddress.ip_address(conn.source_ip)
    destination_ip = ipaddress.ip_address(conn.destination_ip)
    return (
        _field(match.namespaces, match.not_namespaces, lambda m: m.matches(namespace))
        # With no identity there is no principal: ``principals`` (even presence) fails, ``not_`` holds.
        and _field(match.principals, match.not_principals, lambda m: principal != "" and m.matches(principal))
        and _field(match.source_ips, match.not_source_ips, lambda c: _in_cidr(source_ip, c))
        and _field(match.destination_ips, match.not_destination_ips, lambda c: _in_cidr(destination_ip, c))
        and _field(match.destination_ports, match.not_destination_ports, lambda p: p == conn.destination_port)
    )


def _field(positive: Iterable[T], negative: Iterable[T], hit: Callable[[T], bool]) -> bool:
    positive, negative = tuple(positive), tuple(negative)
    if positive and not any(hit(value) for value in positive):
        return False
    return not any(hit(value) for value in negative)


def _in_cidr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, cidr: str) -> bool:
    network = ipaddress.ip_network(cidr, strict=False)
    return ip.version == network.version and ip in network
