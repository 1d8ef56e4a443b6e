"""Config push through istiod_lite's real control-plane endpoint: mesh CA serving certificate, node
tokens, ``/v1/xds`` mounted in the ControlServer, a DirectoryStore on a real directory feeding the
PushServer, and two PushClients applying into ztunnel's ProxyState.

Translation is not part of this test: ``_translate`` maps a core ``Service`` manifest to the pushed
Service the way a minimal translator would, so the push path can be shown end to end today.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.push.feed import feed
from istiod_lite.push.server import PushServer
from istiod_lite.push.status import SyncState
from istiod_lite.stores.base import ResourceKey, StoredResource
from istiod_lite.stores.directory import DirectoryStore
from istiod_lite.tokens import NodeTokenAuthenticator, NodeTokens
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from schemas.discovery import NetworkAddress, Service, ServicePort, resource_key, to_json
from ztunnel.state import ProxyState

SEARCH_KEY = "prod/search.prod.svc.cluster.local"


def _manifest(name: str, cluster_ip: str, port: int = 80) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: prod}}\n"
        f"spec: {{clusterIP: '{cluster_ip}', ports: [{{port: {port}, targetPort: 8080}}]}}\n"
    )


def _translate(resources: Mapping[ResourceKey, StoredResource]) -> dict[str, dict[str, Any]]:
    services: dict[str, Any] = {}
    for key, resource in resources.items():
        if key.kind != "Service":
            continue
        spec = resource.manifest["spec"]
        ports = spec["ports"]
        service = Service(
            name=key.name,
            namespace=key.namespace,
            hostname=f"{key.name}.{key.namespace}.svc.cluster.local",
            vips=(NetworkAddress(address="0.0.0.0"),),
            ports=tuple(ServicePort(service_port=p["port"], target_port=p["targetPort"]) for p in ports),
        )
        body = to_json(service)
        body["vips"] = [{"address": spec["clusterIP"]}]  # unchecked here: the proxy validates (or NACKs)
        services[resource_key(service)] = body
    return {"service": services}


@attrs.define
class RecordingProxy:
    state: ProxyState = attrs.field(factory=ProxyState)
    calls: list[tuple[str, dict[str, Any], list[str], bool]] = attrs.field(factory=list)

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        self.calls.append((type_name, upserts, removed, full))
        self.state.apply(type_name, list(upserts.values()), removed, replace=full)


@attrs.define
class Mesh:
    config: Path
    store: DirectoryStore
    push: PushServer
    tokens: NodeTokens
    url: str
    roots_pem: bytes
    nursery: trio.Nursery

    async def proxy(self, node: str, token: str | None = None) -> tuple[PushClient, RecordingProxy]:
        proxy = RecordingProxy()
        client = PushClient(
            self.url,
            token if token is not None else self.tokens.issue(node),
            control_plane_context(self.roots_pem),
            ["service"],
            proxy,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )
        await self.nursery.start(client.run)
        return client, proxy


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    (config / "search.yaml").write_text(_manifest("search", "240.240.0.1"))
    (config / "cart.yaml").write_text(_manifest("cart", "240.240.0.2"))
    ca = CertificateAuthority.load_or_create(state)
    tokens = NodeTokens(state)
    store = DirectoryStore(config, poll_interval=0.05)
    push = PushServer(types=["service", "workload", "authorization"])
    server = ControlServer(
        ssl_context=serving_context(ca),
        authenticator=NodeTokenAuthenticator(tokens),
        handlers={"/v1/xds": push.handler},
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(push.run)
        await nursery.start(feed, store, _translate, push)
        host, port = await nursery.start(server.run)
        yield Mesh(config, store, push, tokens, f"wss://{host}:{port}/v1/xds", ca.trust_bundle_pem(), nursery)
        nursery.cancel_scope.cancel()


async def _until(predicate: Callable[[], bool], changed: Callable[[], Awaitable[None]]) -> None:
    while not predicate():
        await changed()


def _all_rows(mesh: Mesh, state: SyncState) -> bool:
    return [row.state for row in mesh.push.status()] == [state] * 2


def _has_more_calls(proxy: RecordingProxy, count: int) -> bool:
    return len(proxy.calls) > count


async def _two_synced_proxies(mesh: Mesh) -> tuple[list[PushClient], list[RecordingProxy]]:
    pairs = [await mesh.proxy("node-a"), await mesh.proxy("node-b")]
    with trio.fail_after(5):
        for client, _ in pairs:
            await client.wait_synced()
    return [c for c, _ in pairs], [p for _, p in pairs]


async def test_editing_a_file_reaches_both_proxies_within_a_second_as_a_one_service_delta(mesh: Mesh) -> None:
    clients, proxies = await _two_synced_proxies(mesh)
    for proxy in proxies:
        assert proxy.calls[0][3] is True
        assert set(proxy.calls[0][1]) == {SEARCH_KEY, "prod/cart.prod.svc.cluster.local"}
    before = [len(p.calls) for p in proxies]

    (mesh.config / "search.yaml").write_text(_manifest("search", "240.240.0.9"))
    with trio.fail_after(1):
        for client, proxy, n in zip(clients, proxies, before, strict=True):
            await _until(functools.partial(_has_more_calls, proxy, n), client.wait_changed)

    expected = _translate(mesh.store.list())["service"][SEARCH_KEY]
    for proxy, n in zip(proxies, before, strict=True):
        assert proxy.calls[n:] == [("service", {SEARCH_KEY: expected}, [], False)]
        assert proxy.state.service_by_vip("240.240.0.9") is not None


async def test_an_invalid_file_is_reported_while_its_previous_content_stays_in_force(mesh: Mesh) -> None:
    _clients, proxies = await _two_synced_proxies(mesh)
    served = [p.state.snapshot()["services"] for p in proxies]
    pushes = mesh.push.stats.pushes
    path = mesh.config / "search.yaml"

    path.write_text(_manifest("search", "240.240.0.9") + "---\nkind: Service\nmetadata: {name: broken}\n")
    mesh.store.scan()  # the store's own poll would see it too; scanning here makes the check deterministic
    assert mesh.store.errors == {
        str(path): (f"{path}: document 2 (Service broken): apiVersion: required field missing (a string)",)
    }
    assert _translate(mesh.store.list())["service"][SEARCH_KEY]["vips"] == [{"address": "240.240.0.1"}]
    await trio.sleep(0.3)  # several polls and debounce periods: nothing may go out
    assert mesh.push.stats.pushes == pushes
    assert [p.state.snapshot()["services"] for p in proxies] == served


async def test_a_service_the_proxies_cannot_apply_is_nacked_and_proxy_status_shows_why(mesh: Mesh) -> None:
    clients, proxies = await _two_synced_proxies(mesh)
    served = [p.state.snapshot()["services"] for p in proxies]

    (mesh.config / "search.yaml").write_text(_manifest("search", "240.240.999.1"))
    with trio.fail_after(2):
        await _until(functools.partial(_all_rows, mesh, SyncState.NACKED), mesh.push.wait_changed)
    for row in mesh.push.status():
        assert row.nack_error is not None and "'240.240.999.1' is not an IP address" in row.nack_error
    assert [p.state.snapshot()["services"] for p in proxies] == served
    assert all(c.synced for c in clients)  # a NACK does not cost the connection

    (mesh.config / "search.yaml").write_text(_manifest("search", "240.240.0.3"))
    with trio.fail_after(2):
        await _until(functools.partial(_all_rows, mesh, SyncState.SYNCED), mesh.push.wait_changed)


async def test_a_proxy_with_an_unknown_token_is_refused_and_gets_nothing(mesh: Mesh) -> None:
    client, proxy = await mesh.proxy("node-x", token="not-a-token")
    with trio.fail_after(2):
        await _until(lambda: client.last_connect_error is not None, client.wait_changed)
    assert client.last_connect_error is not None
    assert client.last_connect_error.startswith("istiod_lite refused the connection: HTTP 401")
    assert proxy.calls == [] and not client.connected and mesh.push.status() == []
