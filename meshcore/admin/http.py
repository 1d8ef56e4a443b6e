"""The small HTTP/1.1 server behind every component's admin, metrics and readiness ports.

Used for ``/metrics`` (15020), ``/healthz/ready`` (15021), the localhost admin port 15000
(``/config_dump``, ``/logging``, ``/quitquitquit``) and istiod_lite's admin API.

Why h11 on trio rather than hypercorn + starlette: these endpoints are a route table and a handful of
small bodies; h11 gives us exactly the protocol state machine and nothing else, runs natively on trio
(no anyio/ASGI translation layer in the path of every scrape), and keeps the failure modes visible —
head and body limits, timeouts, keep-alive and error answers are all in this one file. A bad request
is answered (400/404/405/413/431/500) and only that connection is closed; the server keeps serving.

Routes are exact ``(method, path)`` pairs; a path ending in ``/*`` matches that prefix (the handler
reads the rest from ``request.path``). ``HEAD`` falls back to the ``GET`` handler without a body.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

from meshcore.admin.messages import HttpError, Request, Response, split_target
from meshcore.errors import MeshError
from meshcore.telemetry.logs import get_logger

Handler = Callable[[Request], Awaitable[Response]]
Address = tuple[str, int]

_log = get_logger("admin.http")

_READ_CHUNK = 65536


class _CloseConnection(Exception):
    """Internal: the peer went away, timed out, or the server is closing an idle connection."""


class _BodyTooLarge(Exception):
    pass


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class AdminServer:
    """A route table served over HTTP/1.1 with keep-alive. One instance per listening port."""

    def __init__(
        self,
        name: str = "admin",
        *,
        max_head_bytes: int = 16 * 1024,
        max_body_bytes: int = 1024 * 1024,
        idle_timeout: float = 60.0,
        read_timeout: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        self.name = name
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        # Back-pressure, not rejection: past the cap, new connections wait in the kernel's backlog.
        self._connection_slots = trio.Semaphore(max_connections)
        self.address: Address | None = None
        self._routes: dict[tuple[str, str], Handler] = {}
        self._prefix_routes: list[tuple[str, str, Handler]] = []
        self._closing = False
        self._accept_scope: trio.CancelScope | None = None
        self._connections_scope: trio.CancelScope | None = None
        self._idle_scopes: set[trio.CancelScope] = set()
        self._close_grace = 5.0

    # -- routes -----------------------------------------------------------------------------------

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        method = method.upper()
        if path.endswith("/*"):
            self._prefix_routes.append((method, path[:-1], handler))
            self._prefix_routes.sort(key=lambda route: len(route[1]), reverse=True)
        else:
            self._routes[(method, path)] = handler

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_route`."""

        def register(handler: Handler) -> Handler:
            self.add_route(method, path, handler)
            return handler

        return register

    def _lookup(self, method: str, path: str) -> Handler | None:
        handler = self._routes.get((method, path))
        if handler is not None:
            return handler
        for route_method, prefix, prefix_handler in self._prefix_routes:
            if route_method == method and path.startswith(prefix):
                return prefix_handler
        return None

    def _allowed_methods(self, path: str) -> list[str]:
        methods = {m for (m, p) in self._routes if p == path}
        methods |= {m for (m, prefix, _) in self._prefix_routes if path.startswith(prefix)}
        if "GET" in methods:
            methods.add("HEAD")
        return sorted(methods)

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind ``host:port``, report the bound ``(host, port)``, serve until :meth:`close` or cancel."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        sockname = listeners[0].socket.getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        try:
            async with trio.open_nursery() as connections:
                self._connections_scope = connections.cancel_scope
                with trio.CancelScope() as accept_scope:
                    self._accept_scope = accept_scope
                    if self._closing:
                        accept_scope.cancel()
                    async with trio.open_nursery() as acceptors:
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, connections)
                        task_status.started(self.address)
                # Accepting stopped (close() was called): stop listening, let connections drain.
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                connections.cancel_scope.deadline = min(
                    connections.cancel_scope.deadline, trio.current_time() + self._close_grace
                )
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    def close(self, grace: float = 5.0) -> None:
        """Stop accepting; idle keep-alive connections close now, in-flight requests get ``grace`` seconds."""
        self._closing = True
        self._close_grace = grace
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        if self._connections_scope is not None:
            self._connections_scope.deadline = min(
                self._connections_scope.deadline, trio.current_time() + grace
            )
        for scope in list(self._idle_scopes):
            scope.cancel()

    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            await self._connection_slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                self._connection_slots.release()
                _log.warning("accept failed", server=self.name, error=str(exc))
                await trio.sleep(0.1)
                continue
            except BaseException:
                self._connection_slots.release()
                raise
            connections.start_soon(self._serve_connection, stream)

    # -- one connection ---------------------------------------------------------------------------

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head_bytes)
        try:
            peer = stream.socket.getpeername()
            client: Address | None = (str(peer[0]), int(peer[1]))
        except OSError:
            client = None
        linger = False
        try:
            while not self._closing:
                try:
                    request = await self._read_request(conn, stream, client)
                except h11.RemoteProtocolError as exc:
                    status = exc.error_status_hint
                    _log.info("bad request", server=self.name, client=client, status=status, error=str(exc))
                    linger = True
                    await self._send_error(conn, stream, status, f"bad request: {exc}")
                    return
                except _BodyTooLarge:
                    linger = True
                    await self._send_error(
                        conn, stream, 413, f"request body exceeds {self.max_body_bytes} bytes"
                    )
                    return
                response = await self._dispatch(request)
                await self._send_response(conn, stream, request.method, response)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (_CloseConnection, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except h11.LocalProtocolError as exc:
            _log.warning("response could not be sent", server=self.name, error=str(exc))
        finally:
            try:
                if linger:
                    await self._drain(stream)
            finally:
                self._connection_slots.release()
                await trio.aclose_forcefully(stream)

    async def _receive(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        """Feed h11 one chunk; between requests the wait is idle and ends early when closing."""
        idle = conn.their_state is h11.IDLE and not conn.trailing_data[0]
        with trio.move_on_after(self.idle_timeout if idle else self.read_timeout) as scope:
            if idle:
                self._idle_scopes.add(scope)
            try:
                data = await stream.receive_some(_READ_CHUNK)
            finally:
                self._idle_scopes.discard(scope)
        if scope.cancelled_caught:
            if idle:
                raise _CloseConnection
            raise h11.RemoteProtocolError("timed out reading the request", error_status_hint=408)
        conn.receive_data(data)

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        for _ in range(1_000_000):  # bounded: each round either returns or reads a chunk
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            await self._receive(conn, stream)
        raise _CloseConnection  # pragma: no cover - unreachable with sane chunk sizes

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream, client: Address | None
    ) -> Request:
        event = await self._next_event(conn, stream)
        if isinstance(event, h11.ConnectionClosed):
            raise _CloseConnection
        if not isinstance(event, h11.Request):  # pragma: no cover - h11 yields Request first
            raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", error_status_hint=400)
        # h11 bounds only a head that is still incomplete; one that arrived whole in a single read is
        # measured here, so the limit holds however the bytes were chunked.
        head_size = len(event.method) + len(event.target) + 12
        head_size += sum(len(name) + len(value) + 4 for name, value in event.headers)
        if head_size > self.max_head_bytes:
            raise h11.RemoteProtocolError(
                f"request head of {head_size} bytes exceeds {self.max_head_bytes}", error_status_hint=431
            )
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in event.headers]
        declared = next((v for k, v in headers if k == "content-length"), None)
        if declared is not None and any(k == "transfer-encoding" for k, _ in headers):
            # Both framings at once is the classic request-smuggling shape: refuse, never guess.
            raise h11.RemoteProtocolError(
                "both Content-Length and Transfer-Encoding are present", error_status_hint=400
            )
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise _BodyTooLarge
        if conn.client_is_waiting_for_100_continue:
            await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        body = bytearray()
        while True:
            part = await self._next_event(conn, stream)
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.max_body_bytes:
                    raise _BodyTooLarge
            elif isinstance(part, h11.EndOfMessage):
                break
            else:  # ConnectionClosed mid-body
                raise _CloseConnection
        target = event.target.decode("latin-1")
        path, query = split_target(target)
        return Request(
            method=event.method.decode("ascii").upper(),
            target=target,
            path=path,
            query=query,
            headers=headers,
            body=bytes(body),
            client=client,
        )

    async def _dispatch(self, request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        handler = self._lookup(request.method, request.path) or self._lookup(method, request.path)
        if handler is None:
            allowed = self._allowed_methods(request.path)
            if allowed:
                return Response.text(
                    f"method {request.method} not allowed on {request.path}; allowed: {', '.join(allowed)}\n",
                    405,
                    headers=[("allow", ", ".join(allowed))],
                )
            return Response.text(f"no route for {request.path}\n", 404)
        try:
            return await handler(request)
        except HttpError as exc:
            return Response.text(f"{exc}\n", exc.status)
        except MeshError as exc:
            return Response.text(f"{exc}\n", 400)
        except Exception as exc:
            _log.exception("handler failed", server=self.name, method=request.method, path=request.path)
            return Response.text(f"internal error: {type(exc).__name__}: {exc}\n", 500)

    async def _send_response(
        self, conn: h11.Connection, stream: trio.SocketStream, method: str, response: Response
    ) -> None:
        headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        headers.append((b"content-length", str(len(response.body)).encode()))
        if self._closing:
            headers.append((b"connection", b"close"))
        out = conn.send(
            h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status))
        )
        if method != "HEAD" and response.body:
            out = (out or b"") + (conn.send(h11.Data(data=response.body)) or b"")
        out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
        with trio.move_on_after(self.read_timeout) as scope:
            await stream.send_all(out)
        if scope.cancelled_caught:
            raise _CloseConnection

    async def _send_error(
        self, conn: h11.Connection, stream: trio.SocketStream, status: int, text: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = (text + "\n").encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"connection", b"close"),
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            out = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status))) or b""
            out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return
        with trio.move_on_after(self.read_timeout):
            await stream.send_all(out)

    async def _drain(self, stream: trio.SocketStream) -> None:
        """After an error answer: half-close and read what the client still sends (bounded), so closing
        with unread bytes does not make the kernel send RST and destroy the answer in flight."""
        with trio.move_on_after(1.0):
            try:
                await stream.send_eof()
                for _ in range(64):  # at most 64 chunks or 1 s
                    if not await stream.receive_some(_READ_CHUNK):
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
