"""The explicit outbound proxy of one local workload: ``podIP:15080`` (proxy mode, DESIGN §4).

The trio shell around :mod:`ztunnel.explicit_proxy_protocol`. Which workload is the source is known
from the address the client connected to — each pod has a listener of its own — so no header or
credential from the client is trusted for identity. The first bytes are parsed (bounded in size by the
parser and in time here); a greeting the parser refuses is answered with its reply and the
connection is closed, and the listener keeps serving everyone else.

One destination per client connection: after the first request the connection is a byte tunnel. For
SOCKS5 and CONNECT that is the protocol; for absolute-form HTTP it means a keep-alive client that sends
a second request *for another host* on the same connection reaches the first host (curl and Python's
clients open a new proxy connection per host, so this does not bite them).
"""

from __future__ import annotations

import contextlib

import structlog
import trio

from meshcore.net.listeners import open_tcp_listeners
from meshcore.ready import format_address
from schemas.discovery import Workload
from ztunnel.accept import bound_address, serve_until_drained
from ztunnel.drain import Drain
from ztunnel.explicit_proxy_protocol import ExplicitProxyParser, Outcome, ProxyProtocolError, ProxyRequest, reply_for
from ztunnel.outbound import Outbound

log = structlog.get_logger("ztunnel.explicit_proxy")

GREETING_TIMEOUT = 10.0
READ_CHUNK = 16 * 1024


async def read_request(stream: trio.abc.Stream, parser: ExplicitProxyParser) -> ProxyRequest | None:
    """Feed the parser until it has a request; send the SOCKS5 method selection when it asks to.

    Returns None if the client closed first; raises :class:`ProxyProtocolError` for bad input.
    """
    sent_greeting = False
    while True:
        data = await stream.receive_some(READ_CHUNK)
        if not data:
            return None
        request = parser.feed(bytes(data))
        if parser.greeting_reply and not sent_greeting:
            await stream.send_all(parser.greeting_reply)
            sent_greeting = True
        if request is not None:
            return request


class ExplicitProxyListener:
    """SOCKS5 / HTTP CONNECT / absolute-form HTTP on ``host:port`` for ``workload``'s outbound traffic."""

    def __init__(
        self, workload: Workload, *, host: str, port: int, outbound: Outbound, drain: Drain, reuse_port: bool = False
    ) -> None:
        self.workload = workload
        self._reuse_port = reuse_port  # shared with sibling worker processes (ztunnel.workers)
        self._host = host
        self._port = port
        self._outbound = outbound
        self._drain = drain
        self.address: tuple[str, int] | None = None
        self.rejected = 0

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await open_tcp_listeners(self._port, host=self._host, reuse_port=self._reuse_port)
        self.address = bound_address(listeners)
        await serve_until_drained(listeners, self.serve_connection, self._drain,
                                  name=f"explicit-proxy {self.workload.uid}", task_status=task_status)

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        client_addr = _peer(stream)
        async with stream:
            parser = ExplicitProxyParser()
            try:
                with trio.fail_after(GREETING_TIMEOUT):
                    request = await read_request(stream, parser)
            except ProxyProtocolError as exc:
                self.rejected += 1
                log.info("explicit_proxy_bad_request", client=client_addr, workload=self.workload.uid, error=str(exc))
                await _send_quietly(stream, exc.reply)
                return
            except trio.TooSlowError:
                self.rejected += 1
                log.info("explicit_proxy_greeting_timeout", client=client_addr, timeout=GREETING_TIMEOUT)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if request is None:
                return

            async def reply(outcome: Outcome) -> None:
                answer = reply_for(request.kind, outcome)
                if answer:
                    await stream.send_all(answer)

            try:
                await self._outbound.serve(
                    self.workload,
                    stream,
                    client_addr,
                    request.host,
                    request.port,
                    reply=reply,
                    early_data=request.early_data,
                )
            except Exception:  # one connection's bug must not take the listener (and the node) down
                log.exception("explicit_proxy_connection_failed", client=client_addr, target=request.host)


async def _send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(data)


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "unknown"
    return format_address(str(host), int(port))
