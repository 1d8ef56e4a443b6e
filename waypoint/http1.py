"""HTTP/1.1 on both sides of the waypoint, with h11.

Server side (:func:`serve_http1`): reads requests from a downstream stream (the inner stream of an
HBONE tunnel), hands each to a handler as a :class:`~waypoint.messages.Request`, writes the returned
response, and keeps the connection alive while both sides allow. Malformed input gets the status
h11 hints at (400, 431, 501) and the connection closes; it never escapes to other connections.
Request smuggling is refused explicitly: h11 would let ``Transfer-Encoding`` win over
``Content-Length``, but a request carrying both is answered 400, as Envoy does.

Client side (:class:`Http1ClientConnection`): sends one request at a time on an upstream stream and
reports whether the connection may be reused for the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import aclosing
from http import HTTPStatus

import h11
import structlog
import trio

from waypoint.messages import Body, Headers, Request, Response, local_response, without_hop_by_hop

log = structlog.get_logger("waypoint.http1")

MAX_HEAD = 60 * 1024
READ_SIZE = 64 * 1024
REQUEST_BUFFER_LIMIT = 64 * 1024

Handler = Callable[[Request], Awaitable[Response]]


class DownstreamProtocolError(Exception):
    """The downstream sent something that is not valid HTTP/1.1; ``status`` is the answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class UpstreamProtocolError(Exception):
    """The upstream's response is not valid HTTP/1.1 (reported as 502, flag UPE-like ``UF``)."""


async def _receive_into(conn: h11.Connection, stream: trio.abc.ReceiveStream) -> None:
    data = await stream.receive_some(READ_SIZE)
    conn.receive_data(bytes(data))


async def _next_event(conn: h11.Connection, stream: trio.abc.ReceiveStream) -> object:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            await _receive_into(conn, stream)
            continue
        return event


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _head_size_check(event: h11.Request, max_head: int) -> None:
    """h11 bounds only a head that is still incomplete; a complete oversized head is caught here."""
    size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers.raw_items())
    if size > max_head:
        raise DownstreamProtocolError(f"request head of {size} bytes exceeds {max_head}", 431)


def _smuggling_check(headers: Headers) -> None:
    names = [name for name, _ in headers]
    if b"transfer-encoding" in names and b"content-length" in names:
        raise DownstreamProtocolError("request has both Content-Length and Transfer-Encoding", 400)
    if names.count(b"content-length") > 1:
        values = {value for name, value in headers if name == b"content-length"}
        if len(values) > 1:
            raise DownstreamProtocolError("conflicting Content-Length headers", 400)


def _request_from_event(event: h11.Request, body: Body) -> Request:
    headers: Headers = [(bytes(k), bytes(v)) for k, v in event.headers.raw_items()]
    headers = [(k.lower(), v) for k, v in headers]
    authority = next((v for k, v in headers if k == b"host"), b"")
    return Request(
        method=bytes(event.method),
        path=bytes(event.target),
        authority=authority,
        headers=[(k, v) for k, v in headers if k != b"host"],
        protocol="HTTP/1.1" if event.http_version == b"1.1" else "HTTP/1.0",
        body=body,
    )


async def serve_http1(
    stream: trio.abc.Stream, handler: Handler, *, max_head: int = MAX_HEAD
) -> None:
    """Serve requests on ``stream`` until either side closes; never raises for bad input."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
    while True:
        try:
            event = await _next_event(conn, stream)
        except h11.RemoteProtocolError as exc:
            await _send_error(conn, stream, exc.error_status_hint, str(exc))
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return
        if not isinstance(event, h11.Request):
            return
        try:
            _head_size_check(event, max_head)
            _smuggling_check([(k.lower(), v) for k, v in event.headers.raw_items()])
        except DownstreamProtocolError as exc:
            await _send_error(conn, stream, exc.status, str(exc))
            return
        keep_going = await _serve_one(conn, stream, event, handler)
        if not keep_going:
            return
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            return


async def _serve_one(conn: h11.Connection, stream: trio.abc.Stream, event: h11.Request, handler: Handler) -> bool:
    """One request/response exchange. Returns whether the connection may carry another."""

    async def read_chunk() -> bytes:
        if conn.they_are_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        try:
            next_event = await _next_event(conn, stream)
        except h11.RemoteProtocolError as exc:
            raise DownstreamProtocolError(str(exc), exc.error_status_hint) from exc
        if isinstance(next_event, h11.Data):
            return bytes(next_event.data) or await read_chunk()
        if isinstance(next_event, h11.EndOfMessage):
            body.trailers = [(bytes(k).lower(), bytes(v)) for k, v in next_event.headers.raw_items()]
            return b""
        raise DownstreamProtocolError("connection closed in the middle of the request body", 400)

    framed = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in event.headers.raw_items())
    has_body = framed and not _zero_length(event)
    body = Body(read_chunk, buffer_limit=REQUEST_BUFFER_LIMIT) if has_body else Body()
    request = _request_from_event(event, body)
    try:
        response = await handler(request)
    except DownstreamProtocolError as exc:
        await _send_error(conn, stream, exc.status, str(exc))
        return False
    try:
        await _write_response(conn, stream, response)
    except DownstreamProtocolError as exc:
        log.info("downstream_error_mid_response", error=str(exc))
        return False
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return await _finish_request(conn, stream)


def _zero_length(event: h11.Request) -> bool:
    return any(k.lower() == b"content-length" and v.strip() == b"0" for k, v in event.headers.raw_items())


async def _finish_request(conn: h11.Connection, stream: trio.abc.Stream) -> bool:
    """Read what is left of the request (an empty body's end, or a body the handler did not need).

    Up to REQUEST_BUFFER_LIMIT bytes are drained so the connection can carry the next request;
    past that, closing is cheaper than reading. Returns whether the connection stays usable.
    """
    drained = 0
    while conn.their_state is h11.SEND_BODY and drained <= REQUEST_BUFFER_LIMIT:
        try:
            event = await _next_event(conn, stream)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        if isinstance(event, h11.Data):
            drained += len(event.data)
        elif not isinstance(event, h11.EndOfMessage):
            return False
    return conn.their_state is h11.DONE


async def _write_response(conn: h11.Connection, stream: trio.abc.Stream, response: Response) -> None:
    headers = without_hop_by_hop(response.headers)
    if response.body.trailers or not any(k == b"content-length" for k, _ in headers):
        headers = [(k, v) for k, v in headers if k != b"content-length"]
    head = h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
    try:
        await stream.send_all(conn.send(head) or b"")
        async with aclosing(response.body.chunks()) as chunks:
            async for chunk in chunks:
                await stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
        trailers = response.body.trailers if conn.our_state is h11.SEND_BODY else []
        await stream.send_all(conn.send(h11.EndOfMessage(headers=trailers)) or b"")
    finally:
        # a relayed upstream body not read to its end (the client went away) gives its connection back
        release_unread = getattr(response.body, "release_unread", None)
        if release_unread is not None:
            await release_unread()


async def _send_error(conn: h11.Connection, stream: trio.abc.Stream, status: int, message: str) -> None:
    """Answer a protocol error if a response can still start, then close (the framing is lost)."""
    log.info("downstream_protocol_error", status=status, error=message)
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    reply = local_response(status, message + "\n")
    reply.headers.append((b"connection", b"close"))
    try:
        await stream.send_all(
            conn.send(h11.Response(status_code=status, headers=reply.headers, reason=_reason(status))) or b""
        )
        await stream.send_all(conn.send(h11.Data(data=await reply.body.read_all(4096))) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
        return


class Http1ClientConnection:
    """One upstream HTTP/1.1 connection; a request at a time, reusable when cleanly finished."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.requests_sent = 0

    @property
    def reusable(self) -> bool:
        states = (self._conn.our_state, self._conn.their_state)
        return states in ((h11.IDLE, h11.IDLE), (h11.DONE, h11.DONE))

    async def request(self, request: Request) -> Response:
        """Send ``request`` (body from its start) and return the response with a streaming body."""
        conn = self._conn
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        headers: Headers = [(b"host", request.authority), *without_hop_by_hop(request.headers)]
        has_length = request.header(b"content-length") is not None
        if not has_length and not (request.body.complete and request.body.bytes_read == 0):
            headers.append((b"transfer-encoding", b"chunked"))
        self.requests_sent += 1
        await self.stream.send_all(
            conn.send(h11.Request(method=request.method, target=request.path, headers=headers)) or b""
        )
        async with aclosing(request.body.chunks()) as chunks:
            async for chunk in chunks:
                await self.stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
        await self.stream.send_all(conn.send(h11.EndOfMessage(headers=request.body.trailers)) or b"")
        while True:
            try:
                event = await _next_event(conn, self.stream)
            except h11.RemoteProtocolError as exc:
                raise UpstreamProtocolError(f"bad response from upstream: {exc}") from exc
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                break
            raise UpstreamProtocolError("upstream closed the connection before responding")

        async def read_chunk() -> bytes:
            try:
                next_event = await _next_event(conn, self.stream)
            except h11.RemoteProtocolError as exc:
                raise UpstreamProtocolError(f"bad response body from upstream: {exc}") from exc
            if isinstance(next_event, h11.Data):
                return bytes(next_event.data) or await read_chunk()
            if isinstance(next_event, h11.EndOfMessage):
                response_body.trailers = [(bytes(k).lower(), bytes(v)) for k, v in next_event.headers.raw_items()]
                return b""
            raise UpstreamProtocolError("upstream closed the connection mid-body")

        response_body = Body(read_chunk)
        response_headers = [(bytes(k).lower(), bytes(v)) for k, v in event.headers.raw_items()]
        return Response(status=event.status_code, headers=response_headers, body=response_body)
