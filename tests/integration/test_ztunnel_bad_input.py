"""Bad input at a real ztunnel's HBONE port, each answered as DESIGN §3 says and logged, while a tunnel
opened beforehand (client → ztunnel A → ztunnel B → app) keeps carrying bytes and new ones still open.

The raw HTTP/2 client here is written directly on ``h2`` + ``ssl`` so it can send what no conforming
HBONE client would (a GET, a 1 MiB header block, garbage frames).
"""

from __future__ import annotations

import functools
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import h2.config
import h2.connection
import h2.events
import pytest
import trio

from meshcore.identity.spiffe import Identity
from meshcore.identity.tls import client_context
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import (
    Pod,
    echo_app,
    free_block,
    receive_exactly,
    socks5_connect,
    write_cert_dir,
    write_local_config,
    ztunnel_args,
)
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir

PROBE = Identity("cluster.local", "client", "probe")


@attrs.define
class Setup:
    a: Component
    b: Component
    client: Pod
    web: Pod
    certs: Path
    sink_events: list[str]
    tunnel: trio.SocketStream | None = None


async def sink_app(host: str, port: int, events: list[str], *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Reads until the end and records how the connection ended: "eof" or "reset"."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                events.append("reset")
                return
            events.append("eof")

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def resetting_app(host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Reads the first bytes, then aborts the connection with a TCP RST."""

    async def handle(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


@pytest.fixture
async def setup(spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Setup]:
    block = free_block()
    client = Pod("client", "client", "client", f"127.{block}.1.1", "node-a")
    web = Pod("web", "server", "web", f"127.{block}.2.1", "node-b")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [client, web])
    certs = tmp_path / "certs"
    write_cert_dir(certs, [client.identity, web.identity, PROBE], tmp_path / "ca")
    events: list[str] = []
    await nursery.start(echo_app, web.ip, 7000)
    await nursery.start(sink_app, web.ip, 7001, events)
    await nursery.start(resetting_app, web.ip, 7002)
    b = spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, certs))
    a = spawn.python_module("ztunnel-a", "ztunnel", *ztunnel_args("node-a", f"127.{block}.0.1", config, certs))
    setup = Setup(a=a, b=b, client=client, web=web, certs=certs, sink_events=events)
    tunnel, code = await socks5_connect((client.ip, 15080), web.ip, 7000)
    assert code == 0
    setup.tunnel = tunnel
    async with tunnel:
        await tunnel.send_all(b"before")
        assert await receive_exactly(tunnel, 6) == b"before"
        yield setup
        # The tunnel opened before the bad input still works, and a new one opens.
        await tunnel.send_all(b"after")
        assert await receive_exactly(tunnel, 5) == b"after"
    fresh, code = await socks5_connect((client.ip, 15080), web.ip, 7000)
    async with fresh:
        assert code == 0
        await fresh.send_all(b"new")
        assert await receive_exactly(fresh, 3) == b"new"


def probe_context(certs: Path, with_certificate: bool = True) -> ssl.SSLContext:
    if not with_certificate:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cafile=str(certs / ROOT_FILE))
        ctx.set_alpn_protocols(["h2"])
        return ctx
    where = identity_dir(certs, PROBE)
    return client_context((where / CHAIN_FILE).read_bytes(), (where / KEY_FILE).read_bytes(),
                          (certs / ROOT_FILE).read_bytes())


class RawH2:
    """A deliberately permissive HTTP/2 client over TLS to a ztunnel's HBONE port."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None,
                                                                         validate_outbound_headers=False))
        # hpack's Huffman encoder is quadratic in the value size (minutes for 1 MiB): send literals.
        plain = functools.partial(self.conn.encoder.encode, huffman=False)
        setattr(self.conn.encoder, "encode", lambda headers, huffman=True: plain(headers))  # noqa: B010

    @classmethod
    async def open(cls, host: str, ctx: ssl.SSLContext) -> RawH2:
        tcp = await trio.open_tcp_stream(host, 15008)
        tls = trio.SSLStream(tcp, ctx, server_hostname=None, https_compatible=True)
        await tls.do_handshake()
        raw = cls(tls)
        raw.conn.initiate_connection()
        await raw.flush()
        return raw

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def request(self, headers: list[tuple[bytes, bytes]]) -> int | str:
        """Send one request; the response status, or "closed"/"reset"/"goaway" if none came."""
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=False)
        try:
            await self.flush()
        except trio.BrokenResourceError:
            return "closed"
        with trio.fail_after(10):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return "closed"
                if not data:
                    return "closed"
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                        return int(dict(event.headers)[b":status"])
                    if isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                        return "reset"
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return "goaway"
                await self.flush()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def connect(authority: str) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"CONNECT"), (b":authority", authority.encode())]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (lambda web: connect(f"{web.ip}:7000"), 200),  # the control: a valid CONNECT from an unknown peer
        (lambda web: connect("127.0.0.1:7000"), 400),  # an IP that is not this pod's
        (lambda web: connect(f"{web.ip}:15008"), 400),  # HBONE into HBONE
        (lambda web: connect(f"{web.ip}:15006"), 503),  # a capture port: nothing behind it
        (lambda web: connect(f"{web.ip}:7999"), 503),  # nobody listens there
        (lambda web: [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"),
                      (b":authority", f"{web.ip}:7000".encode())], 400),
        # Past h2's header-list limit the whole (probe's own) connection goes: GOAWAY, not a stream answer.
        (lambda web: [*connect(f"{web.ip}:7000"), (b"x-big", b"a" * (1024 * 1024))], "goaway"),
    ],
    ids=["valid", "foreign-ip", "port-15008", "port-15006", "no-app", "get", "1mib-header"],
)
async def test_connect_requests_get_their_answer(setup: Setup, headers: object, expected: int | str) -> None:
    raw = await RawH2.open(setup.web.ip, probe_context(setup.certs))
    try:
        status = await raw.request(headers(setup.web))  # type: ignore[operator]
    finally:
        await raw.aclose()
    assert status == expected


async def test_tls_without_a_client_certificate_is_refused(setup: Setup) -> None:
    tcp = await trio.open_tcp_stream(setup.web.ip, 15008)
    tls = trio.SSLStream(tcp, probe_context(setup.certs, with_certificate=False), server_hostname=None,
                         https_compatible=True)
    try:
        # Under TLS 1.3 the server's refusal arrives after the client's handshake returned: on first read.
        await tls.do_handshake()
        await tls.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        with trio.fail_after(10):
            refused = await tls.receive_some(4096) == b""
    except trio.BrokenResourceError:
        refused = True
    finally:
        await trio.aclose_forcefully(tls)
    assert refused


async def test_plaintext_and_garbage_instead_of_tls(setup: Setup) -> None:
    for payload in (b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", bytes(range(256)) * 64):
        stream = await trio.open_tcp_stream(setup.web.ip, 15008)
        async with stream:
            await stream.send_all(payload)
            with trio.fail_after(10):
                try:
                    while await stream.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass


async def test_http2_garbage_after_the_handshake_costs_only_that_connection(setup: Setup) -> None:
    raw = await RawH2.open(setup.web.ip, probe_context(setup.certs))
    outcome = "open"
    try:
        # An unknown frame type (ignored, as RFC 9113 says), then a DATA frame on stream 0 (a connection
        # error). Not a frame header announcing megabytes: h2 buffers a frame's whole body before
        # checking its length, so that would only time out.
        unknown_frame = b"\x00\x00\x04\xff\x00\x00\x00\x00\x01abcd"
        data_on_stream_zero = b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd"
        await raw.stream.send_all(unknown_frame + data_on_stream_zero)
        with trio.move_on_after(10):
            for _ in range(100):
                data = await raw.stream.receive_some(65536)
                if not data:
                    outcome = "closed"
                    break
                if any(isinstance(e, h2.events.ConnectionTerminated) for e in raw.conn.receive_data(data)):
                    outcome = "goaway"
                    break
    except trio.BrokenResourceError:
        outcome = "closed"
    finally:
        await raw.aclose()
    assert outcome in ("goaway", "closed"), setup.b.stderr_tail()


async def test_client_reset_mid_transfer_resets_the_app_side(setup: Setup) -> None:
    stream, code = await socks5_connect((setup.client.ip, 15080), setup.web.ip, 7001)
    assert code == 0
    await stream.send_all(b"x" * 100_000)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()  # TCP RST towards ztunnel A
    for _ in range(200):
        if setup.sink_events:
            break
        await trio.sleep(0.05)
    assert setup.sink_events == ["reset"]


async def test_app_reset_reaches_the_client_as_a_reset(setup: Setup) -> None:
    stream, code = await socks5_connect((setup.client.ip, 15080), setup.web.ip, 7002)
    assert code == 0
    async with stream:
        await stream.send_all(b"hello")
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
            # A clean end would read b"" here; an abort must surface as one (ECONNRESET), end to end.
            while await stream.receive_some(4096):
                pass
