"""From the cluster to a connected proxy: pods, Services and CRDs created in the API emulator are translated
and pushed to a PushClient that authenticated with a ztunnel ServiceAccount token (TokenReview)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import httpx2
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES
from istiod_lite.kube.inventory import translate_cluster
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.tokenreview import TokenReviewAuthenticator
from istiod_lite.push.feed import feed
from istiod_lite.push.server import PushServer
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from tests.integration.test_kube_store import ADMIN, SERVICE, VIRTUAL_SERVICE, connect, emulator_url, pod
from tests.integration.test_kube_tokenreview import ZTUNNEL, bound, ztunnel_pod
from tests.support.processes import Spawner

TYPES = ("workload", "service", "authorization", "waypoint")
DENY_FROM_TEST = {
    "apiVersion": "security.istio.io/v1",
    "kind": "AuthorizationPolicy",
    "metadata": {"name": "deny-test", "namespace": "prod"},
    "spec": {"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["test"]}}]}]},
}


@attrs.define
class Recorder:
    """The proxy side: what the push client applied, by type and key."""

    state: dict[str, dict[str, Any]] = attrs.field(factory=lambda: {t: {} for t in TYPES})

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        if full:
            self.state[type_name] = {}
        self.state[type_name].update(upserts)
        for key in removed:
            self.state[type_name].pop(key, None)


async def until(client: PushClient, predicate: Callable[[], bool], what: str) -> None:
    with trio.move_on_after(10) as scope:
        while not predicate():
            await client.wait_changed()
    assert not scope.cancelled_caught, f"timed out waiting for {what}"


async def test_cluster_objects_reach_a_ztunnel_connected_with_its_service_account_token(
    spawn: Spawner, tmp_path: Path
) -> None:
    url = emulator_url(spawn, tmp_path, {"tok-a": bound(ZTUNNEL, "ztunnel-a", "uid-a")})
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "prod", "labels": {"istio.io/dataplane-mode": "ambient"}}})
    await admin.create(RESOURCES["Pod"], ztunnel_pod("ztunnel-a", "uid-a", "node-a"))
    api = connect(url, rbac_usage.ISTIOD)
    store = KubernetesStore(api)
    push = PushServer(types=TYPES, debounce=0.02, max_delay=0.2)
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    server = ControlServer(
        ssl_context=serving_context(ca),
        authenticator=TokenReviewAuthenticator(api),
        handlers={"/v1/xds": push.handler},
    )
    proxy = Recorder()
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(push.run)
        await nursery.start(feed, store, translate_cluster, push)
        host, port = await nursery.start(server.run)
        client = PushClient(f"wss://{host}:{port}/v1/xds", "tok-a", control_plane_context(ca.trust_bundle_pem()),
                            TYPES, proxy, backoff=Backoff(initial=0.05, maximum=0.2))
        await nursery.start(client.run)
        with trio.fail_after(10):
            await client.wait_synced()

        await admin.create(RESOURCES["Pod"], pod("search-a", "prod", "node-a", "10.0.0.5"))
        await admin.create(RESOURCES["Service"], SERVICE)
        await admin.create(RESOURCES["VirtualService"], VIRTUAL_SERVICE)
        await admin.create(RESOURCES["AuthorizationPolicy"], DENY_FROM_TEST)

        def arrived() -> bool:
            services = proxy.state["service"].values()
            workloads = proxy.state["workload"].values()
            policies = proxy.state["authorization"].values()
            return (any(s.get("hostname") == "search.prod.svc.cluster.local" for s in services)
                    and any(w.get("name") == "search-a" for w in workloads)
                    and any(p.get("name") == "deny-test" for p in policies))

        await until(client, arrived, "the pod, the Service and the AuthorizationPolicy as pushes")
        (policy,) = [p for p in proxy.state["authorization"].values() if p.get("name") == "deny-test"]
        assert (policy["namespace"], policy["action"]) == ("prod", "DENY")
        (workload,) = [w for w in proxy.state["workload"].values() if w.get("name") == "search-a"]
        assert workload["node"] == "node-a"
        assert workload["service_account"] == "sa-search"
        (service,) = [s for s in proxy.state["service"].values() if s["hostname"] == "search.prod.svc.cluster.local"]
        assert service["vips"][0]["address"] == "10.96.0.10"

        # The pod goes away in the cluster: the proxy is told so.
        await admin_delete_pod(url, "prod", "search-a")
        await until(client, lambda: not any(w.get("name") == "search-a" for w in proxy.state["workload"].values()),
                    "the deleted pod's workload to be removed")
        nursery.cancel_scope.cancel()
    await api.aclose()
    await admin.aclose()


async def admin_delete_pod(url: str, namespace: str, name: str) -> None:
    async with httpx2.AsyncClient(base_url=url) as raw:
        answer = await raw.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
        assert answer.status_code == 200, answer.text
