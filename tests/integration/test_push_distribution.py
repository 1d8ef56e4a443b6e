"""Config push end to end on loopback: a real trio-websocket server over TLS, real PushClients, and
ztunnel's ProxyState as the applier, so validation and NACKs are the real ones.

The server side is mounted the way the control server mounts it: authenticate the bearer token to a
node, then hand the accepted connection to ``PushServer.handler(ws, caller)``.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio_websocket
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from istiod_lite.push.delta import version_of
from istiod_lite.push.server import PushServer
from istiod_lite.push.status import SyncState
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from meshcore.push.protocol import Ack, Push, Subscribe, decode, encode
from schemas.discovery import NetworkAddress, Service, ServicePort, resource_key, to_json
from ztunnel.state import ProxyState

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
TOKENS = {"token-node-a": "node-a", "token-node-b": "node-b", "token-slow": "node-slow"}


# ------------------------------------------------------------------------------------------- TLS


@attrs.frozen
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway self-signed certificate for 127.0.0.1 and a client context trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "istiod-lite-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=2))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return Tls(server=server, client=client)


# ------------------------------------------------------------------------------------------- server


@attrs.frozen
class Caller:
    node: str


async def _serve(
    push: PushServer, tls: Tls, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED
) -> None:
    async def accept(request: trio_websocket.WebSocketRequest) -> None:
        headers = {name.lower(): value for name, value in request.headers}
        token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
        ws = await request.accept()
        if token not in TOKENS:
            await ws.aclose(1008, "unknown token")
            return
        await push.handler(ws, Caller(node=TOKENS[token]))

    async with trio.open_nursery() as nursery:
        await nursery.start(push.run)
        server = await nursery.start(
            trio_websocket.serve_websocket, accept, "127.0.0.1", port, tls.server
        )
        task_status.started(server.port)


@attrs.define
class Istiod:
    """An in-process stand-in for istiod_lite's push endpoint that can be stopped and restarted."""

    tls: Tls
    nursery: trio.Nursery
    port: int = 0
    push: PushServer = attrs.field(factory=PushServer)
    _scope: trio.CancelScope | None = None

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}/v1/xds"

    async def start(self) -> None:
        async def serve(*, task_status: Any) -> None:
            with trio.CancelScope() as scope:
                self._scope = scope
                await _serve(self.push, self.tls, self.port, task_status=task_status)

        self.port = await self.nursery.start(serve)

    def all_synced(self) -> bool:
        return all(row.state is SyncState.SYNCED for row in self.push.status())

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def publish(self, snapshot: Mapping[str, Mapping[str, Any]]) -> None:
        """Publish and wait until the debounce has turned it into the catalog."""
        self.push.publish(snapshot)
        for type_name, resources in snapshot.items():
            await self.push.wait_published(type_name, _version(resources))


def _version(resources: Mapping[str, Any]) -> str:
    return version_of(resources)


# ------------------------------------------------------------------------------------------- proxies


@attrs.define
class RecordingProxy:
    """ztunnel's ProxyState behind the applier interface, recording each push it was asked to apply."""

    state: ProxyState = attrs.field(factory=ProxyState)
    calls: list[tuple[str, dict[str, Any], list[str], bool]] = attrs.field(factory=list)

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        self.calls.append((type_name, upserts, removed, full))
        self.state.apply(type_name, list(upserts.values()), removed, replace=full)

    def served(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        snapshot.pop("generation")
        return snapshot


def _client(istiod: Istiod, token: str, proxy: RecordingProxy) -> PushClient:
    return PushClient(
        istiod.url,
        token,
        istiod.tls.client,
        ["workload", "service", "authorization"],
        proxy,
        backoff=Backoff(initial=0.05, maximum=0.2),
    )


def _service(name: str, vip: str, port: int = 80) -> dict[str, Any]:
    service = Service(
        name=name,
        namespace="prod",
        hostname=f"{name}.prod.svc.cluster.local",
        vips=(NetworkAddress(address=vip),),
        ports=(ServicePort(service_port=port, target_port=8080),),
    )
    return {resource_key(service): to_json(service)}


def _mesh(**overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = {**_service("search", "240.240.0.1"), **_service("cart", "240.240.0.2")}
    services.update(overrides.get("service", {}))
    return {"workload": {}, "service": services, "authorization": {}}


@asynccontextmanager
async def mesh_with_two_proxies(
    tls: Tls,
) -> AsyncIterator[tuple[Istiod, list[PushClient], list[RecordingProxy]]]:
    async with trio.open_nursery() as nursery:
        istiod = Istiod(tls, nursery)
        await istiod.start()
        await istiod.publish(_mesh())
        proxies = [RecordingProxy(), RecordingProxy()]
        clients = [_client(istiod, "token-node-a", proxies[0]), _client(istiod, "token-node-b", proxies[1])]
        for client in clients:
            await nursery.start(client.run)
        with trio.fail_after(5):
            for client in clients:
                await client.wait_synced()
        yield istiod, clients, proxies
        nursery.cancel_scope.cancel()


def _states(istiod: Istiod) -> dict[str, SyncState]:
    return {row.proxy: row.state for row in istiod.push.status() if row.type == "service"}


async def _until(predicate: Callable[[], bool], changed: Callable[[], Awaitable[None]]) -> None:
    """Wait until ``predicate`` holds, re-checking after each change (bounded by the caller's fail_after)."""
    while not predicate():
        await changed()


async def _pushed(clients: list[PushClient], proxies: list[RecordingProxy], before: list[int]) -> None:
    """Wait until every proxy was asked to apply at least one more push than ``before`` counted."""
    for client, proxy, n in zip(clients, proxies, before, strict=True):
        await _until(functools.partial(_has_more_calls, proxy, n), client.wait_changed)


def _has_more_calls(proxy: RecordingProxy, count: int) -> bool:
    return len(proxy.calls) > count


# ------------------------------------------------------------------------------------------- tests


async def test_a_change_to_one_service_reaches_both_proxies_within_a_second_as_a_one_resource_delta(
    tls: Tls,
) -> None:
    async with mesh_with_two_proxies(tls) as (istiod, clients, proxies):
        for proxy in proxies:  # the connect-time pushes were full states of every type
            assert {(call[0], call[3]) for call in proxy.calls} == {
                ("workload", True), ("service", True), ("authorization", True)
            }
        before = [len(proxy.calls) for proxy in proxies]
        changed = _service("search", "240.240.0.9")

        istiod.push.publish(_mesh(service=changed))
        with trio.fail_after(1):
            await _pushed(clients, proxies, before)

        for proxy, n in zip(proxies, before, strict=True):
            assert proxy.calls[n:] == [("service", changed, [], False)]
            search = proxy.state.service("prod/search.prod.svc.cluster.local")
            assert search is not None and search.vips[0].address == "240.240.0.9"
        with trio.fail_after(1):
            await _until(istiod.all_synced, istiod.push.wait_changed)


async def test_a_removed_service_is_pushed_as_a_removal_only(tls: Tls) -> None:
    async with mesh_with_two_proxies(tls) as (istiod, clients, proxies):
        before = [len(proxy.calls) for proxy in proxies]
        mesh = _mesh()
        del mesh["service"]["prod/cart.prod.svc.cluster.local"]
        await istiod.publish(mesh)
        with trio.fail_after(1):
            await _pushed(clients, proxies, before)
        for proxy, n in zip(proxies, before, strict=True):
            assert proxy.calls[n:] == [("service", {}, ["prod/cart.prod.svc.cluster.local"], False)]
            assert proxy.state.service("prod/cart.prod.svc.cluster.local") is None


async def test_a_push_the_proxy_cannot_apply_is_nacked_and_its_state_stays(tls: Tls) -> None:
    async with mesh_with_two_proxies(tls) as (istiod, clients, proxies):
        served_before = [proxy.served() for proxy in proxies]
        broken = _service("search", "240.240.0.1")
        broken["prod/search.prod.svc.cluster.local"]["vips"] = [{"address": "not-an-ip"}]

        await istiod.publish(_mesh(service=broken))
        with trio.fail_after(2):
            await _until(
                lambda: list(_states(istiod).values()) == [SyncState.NACKED] * 2, istiod.push.wait_changed
            )

        assert [proxy.served() for proxy in proxies] == served_before
        for row in istiod.push.status():
            if row.type == "service":
                assert row.nack_error is not None and "'not-an-ip' is not an IP address" in row.nack_error
                assert row.acked_version != row.published_version
        assert all(client.session.rejected == 1 for client in clients)

        # a fixed version goes out as a delta from the last *acknowledged* state and is accepted
        fixed = _service("search", "240.240.0.7")
        await istiod.publish(_mesh(service=fixed))
        with trio.fail_after(2):
            await _until(istiod.all_synced, istiod.push.wait_changed)
        for proxy in proxies:
            assert proxy.calls[-1] == ("service", fixed, [], False)


async def test_restarting_istiod_resyncs_proxies_to_an_identical_state_while_they_keep_serving(
    tls: Tls,
) -> None:
    async with mesh_with_two_proxies(tls) as (istiod, clients, proxies):
        served = [proxy.served() for proxy in proxies]
        versions = [dict(client.session.versions) for client in clients]

        istiod.stop()
        with trio.fail_after(2):
            for client in clients:
                await client.wait_disconnected()
        await trio.sleep(0.3)  # a few failed reconnect attempts while the control plane is away
        for proxy, before in zip(proxies, served, strict=True):
            assert proxy.served() == before  # still serving the last good state
            assert proxy.state.service_by_vip("240.240.0.1") is not None

        istiod.push = PushServer()
        await istiod.start()
        await istiod.publish(_mesh())
        with trio.fail_after(5):
            for client in clients:
                await client.wait_synced()

        assert [proxy.served() for proxy in proxies] == served
        assert [client.session.versions for client in clients] == versions
        assert all(client.connects == 2 for client in clients)
        assert all(call[3] for proxy in proxies for call in proxy.calls[-3:])  # resync = full states


async def test_a_slow_proxy_gets_one_coalesced_delta_and_does_not_stall_the_others(tls: Tls) -> None:
    async with mesh_with_two_proxies(tls) as (istiod, clients, _proxies):
        headers = [(b"authorization", b"Bearer token-slow")]
        async with trio_websocket.open_websocket_url(
            istiod.url, tls.client, extra_headers=headers, disconnect_timeout=2
        ) as slow:
            await slow.send_message(encode(Subscribe(types=("service",))))
            first = decode(await slow.get_message())
            assert isinstance(first, Push) and first.full
            # The slow proxy now sits on its first push without answering, while config keeps changing.
            expected = {"node-a": SyncState.SYNCED, "node-b": SyncState.SYNCED, "node-slow": SyncState.STALE}
            for n in range(3, 8):
                mesh = _mesh(service=_service("search", f"240.240.0.{n}"))
                await istiod.publish(mesh)
                with trio.fail_after(1):
                    await _until(lambda: _states(istiod) == expected, istiod.push.wait_changed)
            assert all(client.session.versions["service"] == _version(mesh["service"]) for client in clients)

            await slow.send_message(encode(Ack(type="service", nonce=first.nonce, version=first.version)))
            with trio.fail_after(1):
                catch_up = decode(await slow.get_message())
            assert isinstance(catch_up, Push) and not catch_up.full
            assert catch_up.version == _version(mesh["service"])
            assert catch_up.upserts() == _service("search", "240.240.0.7") and catch_up.removed == ()
            answer = Ack(type="service", nonce=catch_up.nonce, version=catch_up.version)
            await slow.send_message(encode(answer))
            with trio.fail_after(1):
                await _until(istiod.all_synced, istiod.push.wait_changed)
