"""Upstream attempts: HBONE to the endpoint's ztunnel, then HTTP/1.1 inside, on pooled connections.

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
from waypoint.http1 import Http1ClientConnection, UpstreamProtocolError
from waypoint.messages import Body, Request, Response
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
    """One HTTP/1.1 connection inside one HBONE tunnel; owns the tunnel's context."""

    def __init__(self, endpoint: Endpoint, stack: contextlib.AsyncExitStack, http: Http1ClientConnection) -> None:
        self.endpoint = endpoint
        self.stack = stack
        self.http = http

    async def aclose(self) -> None:
        quiet = contextlib.suppress(HboneError, trio.BrokenResourceError, trio.ClosedResourceError)
        with trio.CancelScope(shield=True), quiet:
            await self.stack.aclose()


class Upstream:
    """Sends requests to endpoints for the forwarder; ``identity`` is the waypoint's SPIFFE ID."""

    def __init__(self, pool: HbonePool, identity: str) -> None:
        self._pool = pool
        self._identity = identity
        self._idle: dict[str, list[_Connection]] = {}
        self.connections_opened = 0

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
        if reusable and connection.http.reusable and len(idle) < MAX_IDLE_PER_ENDPOINT:
            idle.append(connection)
        else:
            await connection.aclose()

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                await connection.aclose()
        self._idle.clear()

    async def send(self, endpoint: Endpoint, request: Request, *, traceparent: str | None = None) -> Response:
        """One attempt. Returns the response (body buffered up to RESPONSE_BUFFER) or raises AttemptFailed."""
        connection = self._checkout(endpoint)
        if connection is None:
            connection = await self._connect(endpoint, traceparent)
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

    async def _connect(self, endpoint: Endpoint, traceparent: str | None) -> _Connection:
        try:
            return await self._open(endpoint, traceparent)
        except ConnectRejected as exc:
            raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, str(exc)) from exc
        except (HboneError, OSError, trio.BrokenResourceError) as exc:
            raise AttemptFailed(UpstreamFailure.CONNECT_FAILURE, f"{type(exc).__name__}: {exc}") from exc


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


def _streaming_body(
    buffered: list[bytes], chunks: AsyncGenerator[bytes, None], upstream: Body, release: Release
) -> Body:
    pending = list(buffered)
    body: Body

    async def source() -> bytes:
        if pending:
            return pending.pop(0)
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            body.trailers = upstream.trailers
            await release(True)
            return b""
        except BaseException:
            await chunks.aclose()
            await release(False)
            raise
        return chunk

    body = Body(source)
    return body
