"""What to answer an inbound HBONE CONNECT, decided from plain data (no sockets, no clock, no logging).

By the time a request gets here :func:`meshcore.hbone.connect.validate_connect` has checked its shape,
method, authority and proxy ports. What is left is ztunnel's part: the addressed IP must still be the
local workload this listener serves (state may have changed since the listener started, and a
listener holds *that* workload's certificate, so it must not front another one — 400 otherwise), and
L4 authorization must allow the peer (401 with ``DENY`` otherwise).

The source IP authorization sees is the one the client's ztunnel put in ``forwarded: for=`` (the
original client, which is what Istio's ``source.ip`` means) only when that address belongs to a
workload with the identity the peer proved — otherwise any mesh client could claim an address inside
an allowed ``source_ips`` range — else the TCP peer's. In proxy mode the TCP peer is always a
loopback address, so this check is what keeps ``source_ips`` rules both useful and unspoofable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import attrs

from meshcore.hbone.connect import ConnectRequest, ConnectStatus
from schemas.discovery import Authorization, Workload
from ztunnel.authz import ConnectionInfo, Decision, evaluate


@attrs.frozen(kw_only=True)
class InboundVerdict:
    status: ConnectStatus
    reason: str
    response_flags: str = "-"
    connection: ConnectionInfo | None = None
    decision: Decision | None = None

    @property
    def allowed(self) -> bool:
        return self.status is ConnectStatus.OK


def peer_ip(address: str) -> str | None:
    """The IP of an ``ip:port`` / ``[v6]:port`` peer string (None when it is not one)."""
    host = address[1:].partition("]")[0] if address.startswith("[") else (address.rpartition(":")[0] or address)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def source_ip(request: ConnectRequest, forwarded_owner: Workload | None) -> str:
    """The client address to authorize and report: ``forwarded`` if ``forwarded_owner`` (the workload
    holding that IP) proved itself as the peer, else the TCP peer's address."""
    owned = forwarded_owner is not None and forwarded_owner.identity == request.peer_identity
    if request.forwarded_for is not None and owned:
        return str(request.forwarded_for[0])
    return peer_ip(request.peer_address) or "0.0.0.0"


def forwarded_ip(request: ConnectRequest) -> str | None:
    return None if request.forwarded_for is None else str(request.forwarded_for[0])


def decide_inbound(
    request: ConnectRequest,
    *,
    target: Workload | None,
    listener_uid: str,
    policies: Sequence[Authorization],
    forwarded_owner: Workload | None = None,
) -> InboundVerdict:
    """The verdict for ``request`` addressed to ``target`` (the workload owning its IP, if any);
    ``forwarded_owner`` is the workload owning the ``forwarded`` address, if any."""
    if target is None or target.uid != listener_uid:
        return InboundVerdict(
            status=ConnectStatus.BAD_REQUEST,
            reason=f"{request.target_ip} is not the workload this listener serves",
        )
    conn = ConnectionInfo(
        source_ip=source_ip(request, forwarded_owner),
        destination_ip=str(request.target_ip),
        destination_port=request.target_port,
        source_identity=request.peer_identity or None,
    )
    decision = evaluate(conn, policies)
    if not decision.allowed:
        return InboundVerdict(
            status=ConnectStatus.UNAUTHORIZED,
            reason=decision.describe(),
            response_flags="DENY",
            connection=conn,
            decision=decision,
        )
    return InboundVerdict(status=ConnectStatus.OK, reason=decision.describe(), connection=conn, decision=decision)


#: Ports of the proxy itself: a plaintext connection captured towards one of them is a loop, not an app.
PROXY_PORTS = frozenset({15001, 15006, 15008, 15053, 15080})


def decide_inbound_plaintext(
    *,
    source_ip: str,
    destination_ip: str,
    destination_port: int,
    target: Workload | None,
    node: str,
    policies: Sequence[Authorization],
) -> InboundVerdict:
    """A captured plaintext connection (port 15006, netns mode): it carries no identity, so policies that
    need a principal or namespace cannot match it, and a PeerAuthentication STRICT (pushed as a DENY
    of traffic without a principal) refuses it. Only this node's workloads are served."""
    if target is None or target.node != node:
        return InboundVerdict(status=ConnectStatus.BAD_REQUEST,
                              reason=f"{destination_ip} is not a workload on this node")
    if destination_port in PROXY_PORTS:
        return InboundVerdict(status=ConnectStatus.BAD_REQUEST,
                              reason=f"port {destination_port} is a proxy port, not an application port")
    conn = ConnectionInfo(source_ip=source_ip, destination_ip=destination_ip, destination_port=destination_port)
    decision = evaluate(conn, policies)
    if not decision.allowed:
        return InboundVerdict(status=ConnectStatus.UNAUTHORIZED, reason=decision.describe(), response_flags="DENY",
                              connection=conn, decision=decision)
    return InboundVerdict(status=ConnectStatus.OK, reason=decision.describe(), connection=conn, decision=decision)


def baggage_for(workload: Workload) -> str:
    """W3C ``baggage`` naming ``workload``, as Istio's ztunnel sends it: the client describes its source
    on the CONNECT, the server its destination on the 200, so each side can label the other in telemetry."""
    parts = {
        "k8s.namespace.name": workload.namespace,
        "k8s.pod.name": workload.name,
        "service.name": workload.canonical_name or workload.workload_name or workload.name,
        "service.version": workload.canonical_revision or "latest",
    }
    if workload.workload_name:
        kind = workload.workload_type.value.lower()
        parts[f"k8s.{kind}.name"] = workload.workload_name
    return ",".join(f"{key}={value}" for key, value in parts.items())
