"""Upstream attempts: HBONE to the endpoint's ztunnel, then HTTP inside, on pooled connections.

The inner protocol is the downstream's (Envoy's ``USE_DOWNSTREAM_PROTOCOL``, what Istio configures for
an ``http`` port): an HTTP/1.1 request goes out as HTTP/1.1, an HTTP/2 one (gRPC included) as
prior-knowledge HTTP/2 — many requests multiplexed on one tunnel, response trailers (``grpc-status``)
passed back, and the response streamed rather than buffered so server streaming flows as it comes.

The waypoint re-originates traffic under its *own* identity (the pool key's source) and expects the
endpoint's identity on the other side; the CONNECT ``:authority`` is ``podIP:targetPort`` so the
destination ztunnel delivers to the pod. HBONE connections are pooled by :class:`HbonePool`; on top
of that, idle HTTP/1.1 connections (each one tunnel) are kept per endpoint for keep-alive.

An attempt's response body is read into memory up to :data:`RESPONSE_BUFFER` inside the attempt, so a
per-try timeout and a retry decision cover the whole small response (Envoy buffers nothing, but counts
the per-try timeout until the response ends, so the outcome is the same); larger bodies stream on and
the connection is returned to the pool once the body has been read to its end.

Failures become :class:`AttemptFailed` with Envoy's reset reason (:class:`UpstreamFailure`), the only
thing the forwarder needs to decide about retries, outlier detection and the response flag.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable

import h11
import structlog
import trio

from meshcore.hbone.errors import ConnectRejected, HboneError, StreamReset
from meshcore.hbone.h2stream import HboneStream
from meshcore.hbone.pool import HbonePool, PoolKey
from waypoint.circuit_breaker import CircuitBreaker, Overflow, Resource, UpstreamPlan
from waypoint.h2client import Http2ClientConnection
from waypoint.h2errors import Http2Error, UpstreamRefused
from waypoint.http1 import Http1ClientConnection, UpstreamProtocolError
from waypoint.messages import Body, ChunkSource, Request, Response
from waypoint.model import Endpoint, UpstreamFailure

log = structlog.get_logger("waypoint.upstream")

RESPONSE_BUFFER = 1024 * 1024
MAX_IDLE_PER_ENDPOINT = 64
HBONE_PORT = 15008


class AttemptFailed(Exception):
    """An attempt ended before response headers (or its buffered body) arrived."""

    def __init__(self, failure: UpstreamFailure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class _Connection:
    """One HTTP/1.1 connection inside one HBONE tunnel; owns the tunnel's context.

    ``breaker`` is the cluster's circuit breaker when the connection holds one of its ``CONNECTIONS``
    units (given back on close); ``served`` counts requests for ``maxRequestsPerConnection``."""

    def __init__(self, endpoint: Endpoint, stack: contextlib.AsyncExitStack, http: Http1ClientConnection) -> None:
        self.endpoint = endpoint
        self.stack = stack
        self.http = http
        self.breaker: CircuitBreaker | None = None
        self.served = 0
        self.on_close: Callable[[], None] | None = None

    async def aclose(self) -> None:
        quiet = contextlib.suppress(HboneError, trio.BrokenResourceError, trio.ClosedResourceError)
        with trio.CancelScope(shield=True), quiet:
            await self.stack.aclose()
        if self.breaker is not None:
            self.breaker.release(Resource.CONNECTIONS)
            self.breaker = None
        if self.on_close is not None:
            self.on_close()


class _H2Connection:
    """One HTTP/2 connection inside one HBONE tunnel, driven by a task of :meth:`Upstream.run`'s nursery."""

    def __init__(self, endpoint: Endpoint, http: Http2ClientConnection) -> None:
        self.endpoint = endpoint
        self.http = http


class Upstream:
    """Sends requests to endpoints for the forwarder; ``identity`` is the waypoint's SPIFFE ID.

    Run :meth:`run` in a nursery: HTTP/2 upstream connections live in it (their reader and writer
    outlast the request that opened them)."""

    def __init__(self, pool: HbonePool, identity: str) -> None:
        self._pool = pool
        self._identity = identity
        self._idle: dict[str, list[_Connection]] = {}
        self._h2: dict[str, list[_H2Connection]] = {}
        self._nursery: trio.Nursery | None = None
        self._freed = trio.lowlevel.ParkingLot()  # requests pending for a connection (maxConnections)
        self.connections_opened = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the HTTP/2 upstream connections until cancelled (cancelling closes them)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    def pool_key(self, endpoint: Endpoint) -> PoolKey:
        return PoolKey(self._identity, (endpoint.identity,), endpoint.address, HBONE_PORT)

    async def _open(self, endpoint: Endpoint, traceparent: str | None) -> _Connection:
        stack = contextlib.AsyncExitStack()
        try:
            _, stream = await stack.enter_async_context(
                self._pool.open(self.pool_key(endpoint), endpoint.key, traceparent=traceparent)
            )
        except BaseException:
            await stack.aclose()
            raise
        self.connections_opened += 1
        return _Connection(endpoint, stack, Http1ClientConnection(stream))

    def tunnel(self, endpoint: Endpoint) -> contextlib.AbstractAsyncContextManager[tuple[object, HboneStream]]:
        """A raw HBONE tunnel to ``endpoint`` (TCP services: the waypoint applies L4 policy only)."""
        return self._pool.open(self.pool_key(endpoint), endpoint.key)

    def _checkout(self, endpoint: Endpoint) -> _Connection | None:
        idle = self._idle.get(endpoint.key)
        while idle:
            connection = idle.pop()
            if connection.http.reusable:
                return connection
        return None

    async def _checkin(self, connection: _Connection, reusable: bool) -> None:
        idle = self._idle.setdefault(connection.endpoint.key, [])
        connection.served += 1
        breaker = connection.breaker
        exhausted = breaker is not None and breaker.connection_exhausted(connection.served)
        if reusable and connection.http.reusable and not exhausted and len(idle) < MAX_IDLE_PER_ENDPOINT:
            idle.append(connection)
            self._wake_pending()
        else:
            await connection.aclose()  # maxRequestsPerConnection reached, or not reusable

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                await connection.aclose()
        self._idle.clear()

    async def send(
        self, endpoint: Endpoint, request: Request, *, traceparent: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Response:
        """One attempt. Returns the response (body buffered up to RESPONSE_BUFFER) or raises AttemptFailed.

        With the cluster's ``breaker``, HTTP/1.1 connections follow Envoy's pool limits: ``maxConnections``
        open connections per cluster, at most ``http1MaxPendingRequests`` requests waiting for one (more
        → ``OVERFLOW``, answered 503 ``UO``), and a connection retired after ``maxRequestsPerConnection``."""
        if request.protocol == "HTTP/2" and self._nursery is not None:
            return await self._send_h2(endpoint, request, traceparent)
        connection = await self._acquire(endpoint, traceparent, breaker)
        done = False
        try:
            try:
                response = await connection.http.request(request)
            except (StreamReset, trio.BrokenResourceError, trio.ClosedResourceError, UpstreamProtocolError,
                    h11.LocalProtocolError) as exc:
                raise AttemptFailed(UpstreamFailure.RESET, f"{type(exc).__name__}: {exc}") from exc
            result = await _buffered(response, functools.partial(self._checkin, connection))
            done = True
            return result
        finally:
            if not done:
                await connection.aclose()

    def _wake_pending(self) -> None:
        """A connection was checked in or closed: pending requests look again."""
        self._freed.unpark_all()

    async def _acquire(
        self, endpoint: Endpoint, traceparent: str | None, breaker: CircuitBreaker | None
    ) -> _Connection:
        """An idle connection, a new one, or — at ``maxConnections`` — the next one that frees up."""
        connection = self._checkout(endpoint)
        if connection is not None:
            return connection
        if breaker is None:
            return await self._connect(endpoint, traceparent)
        plan = breaker.plan_upstream(idle_connection_available=False)
        if isinstance(plan, Overflow):
            raise AttemptFailed(UpstreamFailure.OVERFLOW,
                                f"{plan.resource.value} overflow: {plan.limit} requests already wait for a connection")
        try:  # the request holds a PENDING_REQUESTS unit until it has a connection
            while plan is UpstreamPlan.WAIT_PENDING:
                await self._freed.park()  # a connection was checked in or closed somewhere
                connection = self._checkout(endpoint)
                if connection is not None:
                    return connection
                if breaker.try_acquire(Resource.CONNECTIONS) is None:
                    plan = UpstreamPlan.OPEN_CONNECTION
            try:
                connection = await self._connect(endpoint, traceparent)
            except BaseException:
                breaker.release(Resource.CONNECTIONS)
                self._wake_pending()
                raise
            connection.breaker = breaker
            connection.on_close = self._wake_pending
            return connection
        finally:
            breaker.release(Resource.PENDING_REQUESTS)

    async def _connect(self, endpoint: Endpoint, traceparent: str | None) -> _Connection:
        try:
            return await self._open(endpoint, traceparent)
        except ConnectRejected as exc:
            raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, str(exc)) from exc
        except (HboneError, OSError, trio.BrokenResourceError) as exc:
            raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, f"{type(exc).__name__}: {exc}") from exc


    # ------------------------------------------------------------------------------------ HTTP/2

    async def _send_h2(self, endpoint: Endpoint, request: Request, traceparent: str | None) -> Response:
        connection = next((c for c in self._h2.get(endpoint.key, ()) if c.http.available), None)
        if connection is None:
            assert self._nursery is not None
            try:
                connection = await self._nursery.start(self._drive_h2, endpoint, traceparent)
            except ConnectRejected as exc:
                raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, str(exc)) from exc
            except (HboneError, OSError, trio.BrokenResourceError) as exc:
                raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, f"{type(exc).__name__}: {exc}") from exc
        try:
            return await connection.http.request(request)
        except UpstreamRefused as exc:  # refused before any processing: the retry policy's "refused-stream"
            raise AttemptFailed(UpstreamFailure.RESET, f"refused: {exc}") from exc
        except (Http2Error, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise AttemptFailed(UpstreamFailure.RESET, f"{type(exc).__name__}: {exc}") from exc

    async def _drive_h2(
        self, endpoint: Endpoint, traceparent: str | None, *, task_status: trio.TaskStatus[_H2Connection]
    ) -> None:
        """Open the tunnel, run HTTP/2 over it until the connection ends, then forget it."""
        async with self._pool.open(self.pool_key(endpoint), endpoint.key, traceparent=traceparent) as (_, stream):
            self.connections_opened += 1
            connection = _H2Connection(endpoint, Http2ClientConnection(stream, peer=endpoint.key))
            entries = self._h2.setdefault(endpoint.key, [])
            entries.append(connection)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(connection.http.run)
                    task_status.started(connection)
            finally:
                entries.remove(connection)
                if not entries:
                    self._h2.pop(endpoint.key, None)


Release = Callable[[bool], Awaitable[None]]
"""Give the connection back (``True``: the exchange finished cleanly and it may carry another)."""


async def _buffered(response: Response, release: Release) -> Response:
    """Read up to RESPONSE_BUFFER of the body now; stream the rest, releasing the connection at its end."""
    upstream_body = response.body
    chunks = upstream_body.chunks()
    buffered: list[bytes] = []
    size = 0
    complete = False
    try:
        while size < RESPONSE_BUFFER:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                complete = True
                break
            buffered.append(chunk)
            size += len(chunk)
    except (StreamReset, trio.BrokenResourceError, trio.ClosedResourceError, UpstreamProtocolError) as exc:
        await chunks.aclose()
        raise AttemptFailed(UpstreamFailure.RESET, f"response body: {type(exc).__name__}: {exc}") from exc
    if complete:
        await release(True)
        body = Body.from_bytes(b"".join(buffered))
        body.trailers = upstream_body.trailers
        return Response(status=response.status, headers=response.headers, body=body)
    return Response(status=response.status, headers=response.headers,
                    body=_streaming_body(buffered, chunks, upstream_body, release))


class StreamingUpstreamBody(Body):
    """A response body still coming from its upstream connection, which it gives back at the end.

    Whoever stops reading it early — the downstream went away mid-body — must await
    :meth:`release_unread`: the connection is then closed (its framing is mid-message), so it neither
    leaks nor keeps a ``maxConnections`` slot."""

    def __init__(self, source: ChunkSource, on_unread: Callable[[], Awaitable[None]]) -> None:
        super().__init__(source)
        self._on_unread: Callable[[], Awaitable[None]] | None = on_unread

    def finished(self) -> None:
        self._on_unread = None

    async def release_unread(self) -> None:
        """Idempotent; nothing to do once the body was read to its end."""
        on_unread, self._on_unread = self._on_unread, None
        if on_unread is not None:
            with trio.CancelScope(shield=True):
                await on_unread()


def _streaming_body(
    buffered: list[bytes], chunks: AsyncGenerator[bytes, None], upstream: Body, release: Release
) -> Body:
    pending = list(buffered)
    body: StreamingUpstreamBody

    async def source() -> bytes:
        if pending:
            return pending.pop(0)
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            body.trailers = upstream.trailers
            body.finished()
            await release(True)
            return b""
        except BaseException:
            body.finished()
            await chunks.aclose()
            await release(False)
            raise
        return chunk

    async def unread() -> None:
        await chunks.aclose()
        await release(False)

    body = StreamingUpstreamBody(source, unread)
    return body
