"""The inbound shell over real loopback: our HBONE pool (client) → InboundListener → an app.

Real mTLS with certificates from the mesh CA; checks each answer the CONNECT contract gives (200 with
baggage, 400, 401, 503), that the listener keeps serving after each, and what the app sees as source.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from meshcore.hbone.errors import ConnectDenied, ConnectRejected
from meshcore.hbone.pool import HbonePool, PoolKey
from meshcore.identity.spiffe import Identity
from meshcore.telemetry.metrics import Registry
from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, Workload
from tests.support.ztunnel_mesh import write_cert_dir
from ztunnel.cert_dir import load_cert_dir
from ztunnel.certificates import CertificateStore
from ztunnel.drain import Drain
from ztunnel.inbound import InboundListener
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionTelemetry

CLIENT = Identity("cluster.local", "front", "client")
SERVER = Workload(uid="srv", name="server", namespace="back", service_account="server", addresses=("127.0.0.1",))
DENY_7 = Authorization(name="deny-7", namespace="back", scope=Scope.NAMESPACE, action=Action.DENY,
                       rules=(Rule(clauses=(Clause(matches=(Match(destination_ports=(7,)),)),)),))


@attrs.define
class Setup:
    pool: HbonePool
    key: PoolKey
    app_port: int
    app_peers: list[str]
    listener: InboundListener
    registry: Registry


@pytest.fixture
async def setup(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Setup]:
    server_id = Identity.parse(SERVER.identity)
    write_cert_dir(tmp_path / "certs", [CLIENT, server_id], tmp_path / "ca")
    store = CertificateStore(lambda identity: load_cert_dir(tmp_path / "certs", [identity])[identity])
    assert not store.ensure([CLIENT, server_id])
    state = ProxyState()
    state.replace_all(workloads=[SERVER], services=[], policies=[DENY_7])
    peers: list[str] = []

    async def echo(stream: trio.SocketStream) -> None:
        peers.append(stream.socket.getpeername()[0])
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()

    app_listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    app_port = app_listeners[0].socket.getsockname()[1]

    registry = Registry()
    listener = InboundListener(
        SERVER, host="127.0.0.1", port=0, state=state, telemetry=ConnectionTelemetry(registry), drain=Drain(),
        ssl_context=store.server_context(server_id), verify_client=store.verify_client(server_id),
        app_bind_address="127.0.0.3",
    )
    host, port = await nursery.start(listener.run)

    pool = HbonePool(store.pool_tls)
    await nursery.start(pool.run)
    key = PoolKey(CLIENT.uri, (SERVER.identity,), host, port)
    yield Setup(pool=pool, key=key, app_port=app_port, app_peers=peers, listener=listener, registry=registry)


async def roundtrip(setup: Setup, payload: bytes) -> tuple[bytes, str | None]:
    async with setup.pool.open(setup.key, f"127.0.0.1:{setup.app_port}", forwarded_for=("127.0.5.5", 4000)) as (
        response,
        stream,
    ):
        await stream.send_all(payload)
        await stream.send_eof()
        echoed = b""
        while chunk := await stream.receive_some(65536):
            echoed += chunk
        return echoed, response.baggage


async def test_allowed_connect_reaches_the_app_from_the_node_address(setup: Setup) -> None:
    echoed, baggage = await roundtrip(setup, b"hello")
    assert echoed == b"hello"
    assert baggage is not None and "k8s.namespace.name=back" in baggage and "k8s.pod.name=server" in baggage
    assert setup.app_peers == ["127.0.0.3"]  # proxy mode: the app sees the ztunnel, not the client
    text = setup.registry.expose()
    assert f'source_principal="{CLIENT.uri}"' in text and 'reporter="destination"' in text


@pytest.mark.parametrize(
    ("authority", "error", "status"),
    [
        ("127.0.0.1:7", ConnectDenied, 401),  # DENY policy on port 7
        ("127.0.0.1:1", ConnectRejected, 503),  # nothing listens on port 1
        ("127.0.0.2:80", ConnectRejected, 400),  # not this listener's workload
        ("127.0.0.1:15008", ConnectRejected, 400),  # HBONE into HBONE
        ("127.0.0.1:15001", ConnectRejected, 503),  # a capture port, no app behind it
    ],
)
async def test_refusals_and_the_listener_keeps_serving(
    setup: Setup, authority: str, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as caught:
        async with setup.pool.open(setup.key, authority):
            raise AssertionError("the tunnel must not open")
    assert getattr(caught.value, "status", None) == status
    assert (await roundtrip(setup, b"after"))[0] == b"after"


async def test_a_denied_connection_is_counted_with_the_deny_flag(setup: Setup) -> None:
    with pytest.raises(ConnectDenied):
        async with setup.pool.open(setup.key, "127.0.0.1:7"):
            pass
    flagged = [line for line in setup.registry.expose().splitlines()
               if line.startswith("istio_tcp_connections_closed_total{") and 'response_flags="DENY"' in line]
    assert len(flagged) == 1 and flagged[0].endswith(" 1")
