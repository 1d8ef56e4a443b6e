"""Push from a real control-plane *process*: kill it, the proxies keep serving; start it again, they
resync to an identical state (same content, same versions).

The process is a minimal istiod_lite composed from the real parts — mesh CA, node tokens,
ControlServer with ``/v1/xds``, DirectoryStore → feed → PushServer — until ``python -m istiod_lite``
exists; the translation inside it is a stand-in mapping core Services to pushed Services.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import attrs
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.tokens import NodeTokens
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from tests.support.processes import Component, Spawner
from ztunnel.state import ProxyState

REPO = str(Path(__file__).resolve().parents[2])
SERVER = r'''
import sys
from pathlib import Path

import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.push.feed import feed
from istiod_lite.push.server import PushServer
from istiod_lite.stores.directory import DirectoryStore
from istiod_lite.tokens import NodeTokenAuthenticator, NodeTokens
from meshcore.ready import announce_ready, format_address


def translate(resources):
    services = {}
    for key, resource in resources.items():
        if key.kind == "Service":
            spec = resource.manifest["spec"]
            hostname = f"{key.name}.{key.namespace}.svc.cluster.local"
            services[f"{key.namespace}/{hostname}"] = {
                "name": key.name, "namespace": key.namespace, "hostname": hostname,
                "vips": [{"address": spec["clusterIP"]}],
                "ports": [{"service_port": p["port"], "target_port": p["targetPort"]} for p in spec["ports"]],
            }
    return {"service": services}


async def main(state: Path, config: Path, port: int) -> None:
    ca = CertificateAuthority.load_or_create(state)
    store = DirectoryStore(config, poll_interval=0.05)
    push = PushServer(types=["service"])
    server = ControlServer(
        ssl_context=serving_context(ca),
        authenticator=NodeTokenAuthenticator(NodeTokens(state)),
        handlers={"/v1/xds": push.handler},
        port=port,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(push.run)
        await nursery.start(feed, store, translate, push)
        host, bound = await nursery.start(server.run)
        announce_ready("istiod-push", {"xds": format_address(host, bound)})


trio.run(main, Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
'''


def _manifest(name: str, cluster_ip: str) -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: prod}}\n"
        f"spec: {{clusterIP: '{cluster_ip}', ports: [{{port: 80, targetPort: 8080}}]}}\n"
    )


@attrs.define
class Proxy:
    state: ProxyState = attrs.field(factory=ProxyState)

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        self.state.apply(type_name, list(upserts.values()), removed, replace=full)

    def served(self) -> dict[str, Any]:
        snapshot = self.state.snapshot()
        snapshot.pop("generation")
        return snapshot


async def _start(spawn: Spawner, state: Path, config: Path, port: int) -> tuple[Component, int]:
    component = spawn.start(
        "istiod-push",
        [sys.executable, "-c", SERVER, str(state), str(config), str(port)],
        env={"PYTHONPATH": REPO},
        wait_ready=False,
    )
    ready = await trio.to_thread.run_sync(component.wait_ready)
    return component, int(ready["addresses"]["xds"].rsplit(":", 1)[1])


async def test_proxies_keep_serving_through_a_control_plane_restart_and_resync_identically(
    spawn: Spawner, tmp_path: Path
) -> None:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    (config / "search.yaml").write_text(_manifest("search", "240.240.0.1"))
    (config / "cart.yaml").write_text(_manifest("cart", "240.240.0.2"))
    roots = CertificateAuthority.load_or_create(state).trust_bundle_pem()
    tokens = NodeTokens(state)
    issued = [tokens.issue("node-a"), tokens.issue("node-b")]  # before the process reads the token file
    istiod, port = await _start(spawn, state, config, 0)
    url = f"wss://127.0.0.1:{port}/v1/xds"

    proxies = [Proxy(), Proxy()]
    clients = [
        PushClient(url, token, control_plane_context(roots), ["service"], proxy, backoff=Backoff(0.05, 0.2))
        for token, proxy in zip(issued, proxies, strict=True)
    ]
    async with trio.open_nursery() as nursery:
        for client in clients:
            await nursery.start(client.run)
        with trio.fail_after(10):
            for client in clients:
                await client.wait_synced()
        served = [proxy.served() for proxy in proxies]
        versions = [dict(client.session.versions) for client in clients]
        assert {s["name"] for s in served[0]["services"]} == {"search", "cart"}

        await trio.to_thread.run_sync(istiod.stop)  # SIGTERM: the process is gone
        with trio.fail_after(5):
            for client in clients:
                await client.wait_disconnected()
        await trio.sleep(0.5)  # reconnect attempts fail while the control plane is down
        assert all(client.last_connect_error is not None for client in clients)
        assert [proxy.served() for proxy in proxies] == served
        assert all(proxy.state.service_by_vip("240.240.0.2") is not None for proxy in proxies)

        await _start(spawn, state, config, port)  # same port, same state directory
        with trio.fail_after(10):
            for client in clients:
                await client.wait_synced()
        assert [proxy.served() for proxy in proxies] == served
        assert [client.session.versions for client in clients] == versions
        assert all(client.connects == 2 for client in clients)
        nursery.cancel_scope.cancel()
