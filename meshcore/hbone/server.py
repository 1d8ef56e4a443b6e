"""The HBONE server: TLS → peer identity → HTTP/2 → one handler task per CONNECT stream.

Failure is contained at the smallest unit that went wrong: a bad request is answered on its own
stream (400, see :mod:`meshcore.hbone.connect`); a handler that crashes costs its own stream a 503; an
HTTP/2 protocol violation costs its connection (h2 sends GOAWAY); a failed TLS handshake (plaintext,
garbage, no client certificate) costs only that TCP connection. The listener keeps serving throughout.

TLS is injected: ``ssl_context`` must require client certificates and offer ALPN ``h2``;
``verify_client(ssl_stream)`` checks the peer's SPIFFE identity after the handshake (Python's ``ssl``
has no verify callback) and returns it, or raises to refuse the connection.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import attrs
import structlog
import trio

from meshcore.hbone.connect import (
    ConnectRequest,
    ConnectStatus,
    IPAddress,
    Rejection,
    build_response_headers,
    validate_connect,
)
from meshcore.hbone.connection import HboneConnection
from meshcore.hbone.h2stream import HboneStream

log = structlog.get_logger("meshcore.hbone.server")

HANDSHAKE_TIMEOUT = 10.0

VerifyPeer = Callable[[trio.SSLStream[trio.abc.Stream]], "str | Awaitable[str]"]


class Respond(Protocol):
    """Answer the CONNECT: 200 returns the tunnel stream, any other status ends it and returns None."""

    async def __call__(self, status: int, headers: Sequence[tuple[str, str]] = ()) -> HboneStream | None: ...


Handler = Callable[[ConnectRequest, Respond], Awaitable[None]]


async def call_verify(verify: VerifyPeer, ssl_stream: trio.SSLStream[trio.abc.Stream]) -> str:
    """Run a sync or async identity check."""
    result = verify(ssl_stream)
    if inspect.isawaitable(result):
        return await result
    return result


def peer_name(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the remote end of a (possibly TLS-wrapped) socket stream, for logs."""
    inner = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    if isinstance(inner, trio.SocketStream):
        try:
            host, port, *_ = inner.socket.getpeername()
        except OSError:
            return "unknown"
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "unknown"


@attrs.define
class ServerStatistics:
    connections_accepted: int = 0
    handshakes_failed: int = 0
    streams_accepted: int = 0
    streams_rejected: int = 0


class HboneServer:
    """Terminates HBONE on one listener; ``handler`` decides what each valid CONNECT becomes."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        verify_client: VerifyPeer,
        handler: Handler,
        *,
        serves: Callable[[IPAddress], bool],
    ) -> None:
        self._ssl_context = ssl_context
        self._verify_client = verify_client
        self._handler = handler
        self._serves = serves
        self.stats = ServerStatistics()
        self._connections: set[HboneConnection] = set()

    def drain(self) -> None:
        """GOAWAY every connection: no new tunnels, open ones finish (component shutdown)."""
        for connection in list(self._connections):
            connection.drain()

    async def run(
        self,
        host: str,
        port: int = 15008,
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` and serve until cancelled; reports the bound (host, port)."""
        await self.serve_listeners(await trio.open_tcp_listeners(port, host=host), task_status=task_status)

    async def serve_listeners(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve listeners opened elsewhere (e.g. inside a network namespace) until cancelled."""
        sockname = listeners[0].socket.getsockname()
        task_status.started((str(sockname[0]), int(sockname[1])))
        await trio.serve_listeners(self.serve_connection, listeners)

    async def serve_connection(self, tcp_stream: trio.abc.Stream) -> None:
        """Serve one accepted TCP connection to its end; never raises for a peer's misbehaviour."""
        self.stats.connections_accepted += 1
        peer = peer_name(tcp_stream)
        ssl_stream = trio.SSLStream(tcp_stream, self._ssl_context, server_side=True, https_compatible=True)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await ssl_stream.do_handshake()
                if ssl_stream.selected_alpn_protocol() != "h2":
                    raise ssl.SSLError(
                        f"client did not negotiate ALPN h2 ({ssl_stream.selected_alpn_protocol()})"
                    )
                identity = await call_verify(self._verify_client, ssl_stream)
        except Exception as exc:  # any handshake/identity failure ends this connection only
            self.stats.handshakes_failed += 1
            log.warning("hbone_handshake_failed", peer=peer, error=_describe(exc))
            await trio.aclose_forcefully(ssl_stream)
            return
        async with trio.open_nursery() as streams:

            def on_request(stream: HboneStream, headers: list[tuple[bytes, bytes]]) -> None:
                streams.start_soon(self._serve_stream, stream, headers, identity, peer)

            connection = HboneConnection(ssl_stream, client_side=False, peer=peer, on_request=on_request)
            self._connections.add(connection)
            try:
                await connection.run()
            finally:
                self._connections.discard(connection)
            # The connection is gone: handlers still copying see ConnectionLost; do not wait on them.
            streams.cancel_scope.cancel()

    async def _serve_stream(
        self, stream: HboneStream, headers: list[tuple[bytes, bytes]], identity: str, peer: str
    ) -> None:
        decision = validate_connect(headers, serves=self._serves)
        if isinstance(decision, Rejection):
            self.stats.streams_rejected += 1
            log.info(
                "hbone_connect_rejected",
                peer=peer,
                peer_identity=identity,
                status=int(decision.status),
                reason=decision.reason,
            )
            _answer(stream, decision.status)
            stream.close_now()
            return
        self.stats.streams_accepted += 1
        request = attrs.evolve(decision, peer_identity=identity, peer_address=peer)
        answered = False

        async def respond(status: int, headers: Sequence[tuple[str, str]] = ()) -> HboneStream | None:
            nonlocal answered
            if answered:
                raise RuntimeError("this CONNECT was already answered")
            answered = True
            _answer(stream, status, headers)
            await trio.lowlevel.checkpoint()
            if status == ConnectStatus.OK:
                return stream
            stream.close_now()
            return None

        try:
            await self._handler(request, respond)
        except Exception as exc:
            log.error("hbone_handler_failed", peer=peer, authority=request.authority, error=_describe(exc))
            if not answered:
                answered = True
                _answer(stream, ConnectStatus.SERVICE_UNAVAILABLE)
        finally:
            if not answered:
                _answer(stream, ConnectStatus.SERVICE_UNAVAILABLE)
            await stream.aclose()


def _answer(stream: HboneStream, status: int, headers: Sequence[tuple[str, str]] = ()) -> None:
    """Send the response headers; a non-200 also ends the stream."""
    stream.send_response(build_response_headers(status, headers), final=status != ConnectStatus.OK)


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = f"{type(exc).__name__}: {exc}"
    if cause is not None and isinstance(exc, trio.BrokenResourceError):
        text += f" ({type(cause).__name__}: {cause})"
    return text
