"""istiod_lite's control-plane endpoint: TLS + WebSocket, bearer-token authentication, routing by path.

Proxies dial this one port for everything they need from the control plane. Each connection goes:

1. TCP accept, TLS handshake with istiod_lite's serving certificate (signed by the mesh root, so a
   proxy that holds the root can verify it; no client certificate — a proxy may not have one yet);
2. WebSocket opening handshake (``trio_websocket.wrap_server_stream`` on our own TLS stream — we do
   the TLS ourselves so the handshake and its failures stay under our control, DESIGN §7);
3. ``Authorization: Bearer <token>`` checked by the :class:`~istiod_lite.tokens.Authenticator`
   (401 with the reason otherwise), the request path looked up in the handler table (404 otherwise);
4. the handler runs with the open connection and the authenticated :class:`~istiod_lite.tokens.Caller`;
   when it returns, the connection is closed.

Adding an endpoint is adding an entry to the ``handlers`` mapping — e.g. the push server registers
``{"/v1/xds": push_handler}`` next to ``{"/v1/ca": csr_service}``; a handler never sees TLS, tokens or
unknown paths. Handlers are ``async def handler(ws: WebSocketConnection, caller: Caller) -> None``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
import trio_websocket

from istiod_lite.ca import CertificateAuthority
from istiod_lite.tokens import AuthenticationFailed, Authenticator, Caller, bearer_token
from meshcore.identity.certs import certificates_pem, private_key_pem
from meshcore.identity.tls import load_cert_chain
from meshcore.telemetry.logs import get_logger

Handler = Callable[[trio_websocket.WebSocketConnection, Caller], Awaitable[None]]
Address = tuple[str, int]

DEFAULT_SERVER_NAMES = ("istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "localhost")
HANDSHAKE_TIMEOUT = 10.0

_log = get_logger("istiod_lite.control")


def serving_context(
    ca: CertificateAuthority,
    *,
    dns_names: tuple[str, ...] = DEFAULT_SERVER_NAMES,
    ip_addresses: tuple[str, ...] = ("127.0.0.1",),
) -> ssl.SSLContext:
    """A server context with a fresh serving certificate from the mesh CA (TLS 1.2+, no client certs)."""
    issued, key = ca.issue_serving(dns_names, ip_addresses)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    load_cert_chain(ctx, certificates_pem(issued.chain), private_key_pem(key))
    return ctx


class ControlServer:
    """Serves the handler table on one TLS port; one task per connection, all owned by :meth:`run`."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        authenticator: Authenticator,
        handlers: Mapping[str, Handler],
        host: str = "127.0.0.1",
        port: int = 0,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self._ssl_context = ssl_context
        self._authenticator = authenticator
        self._handlers = dict(handlers)
        self._host = host
        self._port = port
        self._handshake_timeout = handshake_timeout

    async def run(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the bound ``(host, port)``, and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        sockname = listeners[0].socket.getsockname()
        address: Address = (sockname[0], sockname[1])
        _log.info(
            "control plane listening", address=f"{address[0]}:{address[1]}", paths=sorted(self._handlers)
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started(address)

    async def _serve_connection(self, tcp: trio.SocketStream) -> None:
        tls = trio.SSLStream(tcp, self._ssl_context, server_side=True, https_compatible=True)
        peer = _peer(tcp)
        try:
            with trio.fail_after(self._handshake_timeout):
                await tls.do_handshake()
            async with trio.open_nursery() as nursery:
                await self._serve_websocket(nursery, tls, peer)
                nursery.cancel_scope.cancel()  # the reader task: nothing more to read once we are done
        except trio.TooSlowError:
            _log.info("control connection timed out in handshake", peer=peer)
        except Exception as exc:  # one bad connection or handler must not take the server down
            _log.warning("control connection failed", peer=peer, error=repr(exc))
        finally:
            await trio.aclose_forcefully(tls)

    async def _serve_websocket(self, nursery: trio.Nursery, tls: trio.SSLStream[Any], peer: str) -> None:
        with trio.fail_after(self._handshake_timeout):
            request = await trio_websocket.wrap_server_stream(nursery, tls)
        path = request.path.split("?", 1)[0]
        handler = self._handlers.get(path)
        if handler is None:
            _log.info("control request for unknown path", peer=peer, path=path)
            await request.reject(404, body=f"no control-plane endpoint at {path}".encode())
            return
        try:
            caller = await self._authenticator.authenticate(bearer_token(request.headers))
        except AuthenticationFailed as exc:
            _log.info("control request refused", peer=peer, path=path, error=str(exc))
            await request.reject(401, body=str(exc).encode())
            return
        ws = await request.accept()
        _log.info("control connection", peer=peer, path=path, node=caller.node)
        try:
            await handler(ws, caller)
        finally:
            await ws.aclose()


def _peer(tcp: trio.SocketStream) -> str:
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return "unknown"
    return f"{host}:{port}"
