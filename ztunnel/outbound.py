"""Outbound: one client connection from a local workload → its destination, per Istio's order.

Where to go is :meth:`ztunnel.state.ProxyState.find_destination` (service VIP or hostname → its
waypoint or an endpoint; workload IP; else passthrough). A name the mesh does not know is resolved by
the OS and looked up again by IP, so a workload IP behind a plain DNS name is still tunnelled. Then:

* HBONE (an endpoint in the mesh, or a waypoint): a tunnel from the pool under the *source workload's*
  identity, expecting the destination's identities, with ``:authority`` from the Destination and
  ``forwarded``/``baggage``/``traceparent`` headers;
* plain TCP for a destination without HBONE and for passthrough.

The caller (explicit proxy, or capture) hands in a ``reply`` callback that tells its client the outcome
before any byte flows — a SOCKS5 reply, a ``200 Connection established`` — and the bytes the client
already sent (``early_data``). :func:`classify_failure` is the pure mapping from an error to what the
client is told and how telemetry flags it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio

from meshcore.errors import MeshError
from meshcore.hbone.copy import CopyStats
from meshcore.hbone.errors import ConnectDenied, ConnectRejected, HboneError
from meshcore.hbone.pool import Connector, HbonePool, PoolKey, tcp_connector
from meshcore.ready import format_address
from meshcore.telemetry.tracecontext import TraceContext
from schemas.discovery import TunnelProtocol, Workload
from ztunnel.drain import Drain
from ztunnel.explicit_proxy_protocol import Outcome
from ztunnel.inbound_decision import baggage_for
from ztunnel.state import Destination, DestinationKind, ProxyState
from ztunnel.telemetry import ConnectionFacts, ConnectionTelemetry, copy_reporting

log = structlog.get_logger("ztunnel.outbound")

TCP_CONNECT_TIMEOUT = 10.0

Reply = Callable[[Outcome], Awaitable[None]]
Resolver = Callable[[str, int], Awaitable[str]]


class NameNotResolved(MeshError):
    response_flag = "NR"
    hint = "{host} is neither a mesh service (svc, svc.ns, svc.ns.svc.cluster.local) nor resolvable by the OS"


async def resolve_with_os(host: str, port: int) -> str:
    """The first address the OS resolver gives for ``host`` (raises :class:`NameNotResolved`)."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameNotResolved(f"cannot resolve {host}: {exc.strerror}", host=host) from None
    if not infos:
        raise NameNotResolved(f"cannot resolve {host}: no addresses", host=host)
    return str(infos[0][4][0])


@attrs.frozen
class Failure:
    """How a failed outbound attempt is reported: to the client, in metrics, in the access log."""

    outcome: Outcome
    response_flags: str
    result: str


def classify_failure(exc: BaseException) -> Failure:
    """Pure: the reply and flags for an error raised while resolving or connecting."""
    if isinstance(exc, ConnectDenied):
        return Failure(Outcome.DENIED, "DENY", str(exc.status))
    if isinstance(exc, ConnectRejected):
        return Failure(Outcome.REFUSED, "CONNECT", str(exc.status))
    if isinstance(exc, HboneError):
        return Failure(Outcome.UNREACHABLE, "CONNECT", "connect_failed")
    if isinstance(exc, NameNotResolved):
        return Failure(Outcome.UNREACHABLE, "NR", "no_route")
    if isinstance(exc, MeshError):  # lb.NoHealthyEndpoints, UnknownServicePort, UnknownWaypoint, …
        return Failure(Outcome.UNREACHABLE, exc.response_flag if exc.response_flag != "-" else "NR", "no_route")
    if isinstance(exc, trio.TooSlowError):
        return Failure(Outcome.UNREACHABLE, "CONNECT", "connect_timeout")
    if _refused(exc):
        return Failure(Outcome.REFUSED, "CONNECT", "connect_refused")
    return Failure(Outcome.FAILED, "CONNECT", "connect_failed")


class Outbound:
    """Carries outbound connections of local workloads; shared by every explicit-proxy listener."""

    def __init__(
        self,
        *,
        state: ProxyState,
        pool: HbonePool,
        telemetry: ConnectionTelemetry,
        drain: Drain,
        resolver: Resolver = resolve_with_os,
        dialer: Connector | None = None,
    ) -> None:
        self._state = state
        self._dialer = dialer or tcp_connector()  # netns mode: from the pod's namespace, marked
        self._pool = pool
        self._telemetry = telemetry
        self._drain = drain
        self._resolver = resolver

    async def destination(self, source: Workload, host: str, port: int) -> Destination:
        """Mesh state first (IPs, service hostnames incl. short names), then the OS resolver."""
        found = self._state.find_destination(host, port, source)
        if found.kind is DestinationKind.PASSTHROUGH and found.service is None and not _is_ip(host):
            address = await self._resolver(host, port)
            found = self._state.find_destination(address, port, source)
        return found

    async def serve(
        self,
        source: Workload,
        client: trio.abc.Stream,
        client_addr: str,
        host: str,
        port: int,
        *,
        reply: Reply,
        early_data: bytes = b"",
    ) -> None:
        """Carry one client connection to ``host:port`` (a name or an IP) on behalf of ``source``."""
        with self._drain.connection():
            facts = ConnectionFacts(
                direction="outbound",
                src_addr=client_addr,
                dst_addr=format_address(host, port),
                source=source,
                source_identity=source.identity,
            )
            try:
                dest = await self.destination(source, host, port)
            except (MeshError, OSError) as exc:
                await self._fail(facts, exc, reply)
                return
            facts = _facts_for(facts, dest)
            if dest.tunnel is TunnelProtocol.HBONE:
                await self._via_hbone(source, client, client_addr, dest, facts, reply, early_data)
            else:
                await self._via_tcp(client, dest, facts, reply, early_data)

    async def _via_hbone(
        self,
        source: Workload,
        client: trio.abc.Stream,
        client_addr: str,
        dest: Destination,
        facts: ConnectionFacts,
        reply: Reply,
        early_data: bytes,
    ) -> None:
        assert dest.authority is not None
        key = PoolKey(source.identity, dest.expected_identities, dest.address, dest.port)
        client_port = int(client_addr.rpartition(":")[2]) if client_addr.rpartition(":")[2].isdigit() else 0
        forwarded_ip = source.addresses[0] if source.addresses else client_addr.rpartition(":")[0].strip("[]")
        connected = False
        try:
            async with self._pool.open(
                key,
                dest.authority,
                forwarded_for=(forwarded_ip, client_port),
                forwarded_host=dest.service.hostname if dest.service is not None else None,
                baggage=baggage_for(source),
                traceparent=TraceContext.new_root().traceparent(),
            ) as (_response, tunnel):
                connected = True
                await self._carry(client, tunnel, facts, reply, early_data)
        except (MeshError, OSError, trio.TooSlowError) as exc:
            if connected:
                raise
            await self._fail(facts, exc, reply)

    async def _via_tcp(
        self, client: trio.abc.Stream, dest: Destination, facts: ConnectionFacts, reply: Reply, early_data: bytes
    ) -> None:
        try:
            with trio.fail_after(TCP_CONNECT_TIMEOUT):
                upstream = await self._dialer(dest.address, dest.port)
        except (OSError, trio.TooSlowError) as exc:
            await self._fail(facts, exc, reply)
            return
        async with upstream:
            await self._carry(client, upstream, facts, reply, early_data)

    async def _carry(
        self,
        client: trio.abc.Stream,
        upstream: trio.abc.Stream,
        facts: ConnectionFacts,
        reply: Reply,
        early_data: bytes,
    ) -> None:
        tracked = self._telemetry.track(facts)
        stats = CopyStats()
        try:
            await reply(Outcome.OK)
            if early_data:
                await upstream.send_all(early_data)
                stats.downstream_to_upstream += len(early_data)
            await copy_reporting(tracked, client, upstream, stats)
        except (trio.BrokenResourceError, trio.ClosedResourceError, HboneError) as exc:
            stats.reset, stats.error = True, f"{type(exc).__name__}: {exc}"
        finally:
            tracked.finish(
                bytes_received=stats.downstream_to_upstream,
                bytes_sent=stats.upstream_to_downstream,
                result="reset" if stats.reset else "ok",
                error=stats.error,
            )

    async def _fail(self, facts: ConnectionFacts, exc: BaseException, reply: Reply) -> None:
        failure = classify_failure(exc)
        tracked = self._telemetry.track(facts, failure.response_flags)
        log.info("outbound_failed", src=facts.src_addr, dst=facts.dst_addr, result=failure.result, error=str(exc))
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await reply(failure.outcome)
        tracked.finish(result=failure.result, error=str(exc))


def _refused(exc: BaseException) -> bool:
    """trio reports "all attempts failed" with the per-address errors as the cause (a group)."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return all(_refused(inner) for inner in cause.exceptions)
    return cause is not None and _refused(cause)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _facts_for(facts: ConnectionFacts, dest: Destination) -> ConnectionFacts:
    hbone = dest.tunnel is TunnelProtocol.HBONE
    workload = dest.workload
    return attrs.evolve(
        facts,
        dst_addr=dest.authority if dest.authority is not None else format_address(dest.address, dest.port),
        destination=workload,
        destination_identity=workload.identity if hbone and workload is not None else None,
        service=dest.service,
        hbone_addr=format_address(dest.address, dest.port) if hbone else None,
        mutual_tls=hbone,
    )
