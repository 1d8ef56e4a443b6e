"""The proxy's push client: one WebSocket to istiod_lite, reconnected with backoff for as long as it runs.

The data plane must survive control-plane loss, so nothing here ever clears the proxy's state: while
istiod_lite is away the applier keeps its last good state, and on reconnect the full push replaces it
in one transaction. Readiness (``run``'s ``task_status``) is "the loop is running", not "synced" — a
proxy starts serving its last (or static) config without istiod_lite; ``wait_synced()`` is for callers
that need the current config first.
"""

from __future__ import annotations

import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

import attrs
import trio
import trio_websocket

from meshcore.errors import MeshError
from meshcore.push.backoff import Backoff
from meshcore.push.protocol import Push, PushProtocolError, decode, encode
from meshcore.push.session import Applier, ClientSession
from meshcore.telemetry.logs import get_logger

_log = get_logger("push.client")

MAX_PUSH_BYTES = 64 * 1024 * 1024
"""A full push of a large mesh is far beyond trio-websocket's 1 MiB default message limit."""


Dialer = Callable[[], Awaitable[trio.abc.Stream]]
"""Opens the byte stream to istiod_lite (TCP, then TLS for wss://); replaceable for in-memory tests."""


_CONNECTION_LOST = (
    OSError,  # refused, reset, TLS failures (ssl.SSLError is an OSError)
    trio.BrokenResourceError,
    trio.TooSlowError,  # connect or handshake timeout
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    PushProtocolError,  # istiod_lite spoke nonsense: drop the connection, keep the state, retry
)


class InvalidPushUrl(MeshError):
    hint = "istiod_lite's push URL looks like wss://HOST:PORT/v1/xds (ws:// only without TLS); got {url}"


@attrs.frozen
class PushTarget:
    host: str
    port: int
    resource: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_push_url(url: str) -> PushTarget:
    """Split a ``ws://``/``wss://`` URL into where to connect and what to ask for."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise InvalidPushUrl(f"not a WebSocket URL: {url!r}", url=url)
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise InvalidPushUrl(f"bad port in {url!r}", url=url) from None
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return PushTarget(host=parts.hostname, port=port, resource=resource)


class PushClient:
    """Subscribe to ``types`` at ``url`` (``ws://`` or ``wss://``) and feed every push to ``applier``."""

    def __init__(
        self,
        url: str,
        token: str,
        ssl_context: ssl.SSLContext | None,
        types: Iterable[str],
        applier: Applier,
        *,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        dialer: Dialer | None = None,
    ) -> None:
        if url.startswith("wss://") and ssl_context is None:
            raise InvalidPushUrl(f"{url} is a wss:// URL but no SSLContext was given", url=url)
        if url.startswith("ws://") and ssl_context is not None:
            raise InvalidPushUrl(f"{url} is a plain ws:// URL but an SSLContext was given", url=url)
        self.url = url
        self._target = parse_push_url(url)
        self._token = token
        self._ssl_context = ssl_context
        self._applier = applier
        self._backoff = backoff if backoff is not None else Backoff(jitter=0.2)
        self._connect_timeout = connect_timeout
        self._dial = dialer if dialer is not None else self._open_stream
        self.session = ClientSession.for_types(types)
        self.connected = False
        self.connects = 0
        self.attempts = 0
        self.last_connect_error: str | None = None
        self._changed = trio.Event()

    # ---------------------------------------------------------------------------------- observing

    @property
    def synced(self) -> bool:
        """Every type's full state was applied on the current connection."""
        return self.connected and self.session.synced

    async def wait_synced(self) -> None:
        """Return once connected and synced (immediately if already so)."""
        while not self.synced:
            await self._changed.wait()

    async def wait_changed(self) -> None:
        """Wait for the next connect, disconnect, failed attempt or handled push."""
        await self._changed.wait()

    async def wait_disconnected(self) -> None:
        while self.connected:
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---------------------------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, sync, serve pushes; on any connection failure wait (backoff) and start over."""
        task_status.started()
        while True:
            try:
                await self._connection()
            except* _CONNECTION_LOST as group:
                self._lost(group.exceptions[0])
                self._notify()
            delay = self._backoff.next_delay()
            _log.info(
                "push reconnect scheduled", url=self.url, delay=round(delay, 3), error=self.last_connect_error
            )
            await trio.sleep(delay)

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, trio_websocket.ConnectionRejected):
            body = (exc.body or b"").decode(errors="replace")
            refused = f"istiod_lite refused the connection: HTTP {exc.status_code} {body}"
            self.last_connect_error = refused.strip()
        elif isinstance(exc, trio_websocket.ConnectionClosed):
            self.last_connect_error = f"connection closed: {exc.reason}"
        else:
            self.last_connect_error = f"{type(exc).__name__}: {exc}"

    async def _connection(self) -> None:
        """One connection's life. The stream is ours and always closed here: trio-websocket's
        ``open_websocket_url`` leaks the socket when cancelled mid-handshake (a ResourceWarning)."""
        async with trio.open_nursery() as nursery:
            self.attempts += 1
            with trio.fail_after(self._connect_timeout):
                stream = await self._dial()
            try:
                with trio.fail_after(self._connect_timeout):
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,  # type: ignore[arg-type]  # typed for sockets, works on any trio Stream
                        self._target.host_header,
                        self._target.resource,
                        extra_headers=[(b"authorization", f"Bearer {self._token}".encode())],
                        max_message_size=MAX_PUSH_BYTES,
                    )
                self.connected = True
                self.connects += 1
                self._notify()
                await ws.send_message(encode(self.session.connected()))
                await self._serve(ws)
            finally:
                if self.connected:
                    self.connected = False
                    self._notify()
                await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()

    async def _open_stream(self) -> trio.abc.Stream:
        target = self._target
        if self._ssl_context is None:
            return await trio.open_tcp_stream(target.host, target.port)
        tcp = await trio.open_tcp_stream(target.host, target.port)
        tls = trio.SSLStream(tcp, self._ssl_context, server_hostname=target.host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls

    async def _serve(self, ws: trio_websocket.WebSocketConnection) -> None:
        while True:
            message = decode(await ws.get_message())
            if not isinstance(message, Push):
                raise PushProtocolError(
                    f"istiod_lite sent a {message.kind} message; it only pushes", frame=message.kind
                )
            answer = self.session.handle(message, self._applier)
            if answer.kind == "nack":
                _log.warning(
                    "push rejected", type=message.type, version=message.version, error=self.session.last_error
                )
            await ws.send_message(encode(answer))
            if self.session.synced:
                self._backoff.reset()  # a connection that delivered config is a good one
            self._notify()
