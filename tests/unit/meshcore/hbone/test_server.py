"""HboneServer behaviour around the handler and the TLS peer, over TLS on memory streams."""

from __future__ import annotations

import ipaddress

import pytest
import trio
import trio.testing

from meshcore.hbone import ConnectRejected, ConnectRequest, HboneError, HboneServer, Respond
from meshcore.hbone.server import HANDSHAKE_TIMEOUT
from tests.unit.meshcore.hbone.harness import echo_app, echo_once, memory_mesh
from tests.unit.meshcore.hbone.pki import IdentityRejected, Pki, verify_any_in_domain

AUTHORITY = "10.0.0.5:8080"


async def test_handler_sees_identity_origin_and_trace_context(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[ConnectRequest] = []

    async def record(request: ConnectRequest, respond: Respond) -> None:
        seen.append(request)
        stream = await respond(200, [("baggage", "k8s.deployment.name=reviews")])
        assert stream is not None
        await echo_app(stream)

    async with (
        memory_mesh(handler=record) as mesh,
        mesh.pool.open(
            mesh.key,
            AUTHORITY,
            forwarded_for=("10.1.0.9", 40000),
            baggage="k8s.namespace.name=apps",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ) as (response, stream),
    ):
        assert response.baggage == "k8s.deployment.name=reviews"
        assert await echo_once(stream, b"x") == b"x"
    [request] = seen
    assert request.peer_identity == mesh.key.source_identity
    assert request.forwarded_for == (ipaddress.ip_address("10.1.0.9"), 40000)
    assert request.baggage == "k8s.namespace.name=apps"
    assert request.traceparent is not None and request.traceparent.endswith("-01")
    assert (str(request.target_ip), request.target_port) == ("10.0.0.5", 8080)


async def test_a_crashing_handler_costs_only_its_stream(autojump_clock: trio.testing.MockClock) -> None:
    async def flaky(request: ConnectRequest, respond: Respond) -> None:
        if request.target_port == 1:
            raise RuntimeError("app connect blew up")
        if request.target_port == 2:
            return  # never answered
        stream = await respond(200)
        assert stream is not None
        await echo_app(stream)

    async with memory_mesh(handler=flaky) as mesh, mesh.pool.open(mesh.key, AUTHORITY) as (_, survivor):
        for port in (1, 2):
            with pytest.raises(ConnectRejected) as info:
                async with mesh.pool.open(mesh.key, f"10.0.0.5:{port}"):
                    pass
            assert info.value.status == 503
        assert await echo_once(survivor, b"ok") == b"ok"
        assert len(mesh.dials) == 1


async def test_identity_check_failure_closes_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    def refuse(ssl_stream: trio.SSLStream[trio.abc.Stream]) -> str:
        raise IdentityRejected("trust domain mismatch")

    async with memory_mesh(verify_client=refuse) as mesh:
        with pytest.raises(HboneError):
            async with mesh.pool.open(mesh.key, AUTHORITY):
                pass
        assert mesh.server.stats.handshakes_failed == 1


async def test_a_client_without_alpn_h2_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    pki = Pki()
    server = HboneServer(
        pki.server_context(pki.spiffe("a", "server")),
        verify_any_in_domain(),
        echo_handler,
        serves=lambda ip: True,
    )
    client_ctx = pki.client_context(pki.spiffe("a", "client"))
    client_ctx.set_alpn_protocols(["http/1.1"])
    client_end, server_end = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_connection, server_end)
        tls = trio.SSLStream(client_end, client_ctx, server_hostname=None, https_compatible=True)
        try:
            await tls.do_handshake()
            await tls.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            answer = await tls.receive_some()
        except trio.BrokenResourceError:
            answer = b""
        assert answer == b""  # closed without speaking HTTP/2
    assert server.stats.handshakes_failed == 1


async def echo_handler(request: ConnectRequest, respond: Respond) -> None:
    stream = await respond(200)
    assert stream is not None
    await echo_app(stream)


async def test_a_silent_client_is_dropped_after_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pki = Pki()
    server = HboneServer(
        pki.server_context(pki.spiffe("a", "server")),
        verify_any_in_domain(),
        echo_handler,
        serves=lambda ip: True,
    )
    _client_end, server_end = trio.testing.memory_stream_pair()
    start = trio.current_time()
    await server.serve_connection(server_end)  # returns: the connection was given up
    assert trio.current_time() - start == pytest.approx(HANDSHAKE_TIMEOUT)
    assert server.stats.handshakes_failed == 1
