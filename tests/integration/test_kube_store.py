"""The Kubernetes store against an API emulator in its own process (real REST + watch over loopback)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from lightkube.config.kubeconfig import KubeConfig
from lightkube.config.models import Cluster, User

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi, Permissions, UndeclaredApiCall
from istiod_lite.kube.root_cert import publish_root_cert
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.views import ClusterConfig, ClusterPods
from istiod_lite.pod_inventory import Pod
from istiod_lite.stores.base import ResourceKey
from istiod_lite.translate.inputs import PodInfo
from tests.support.processes import Spawner

EMULATOR = Path(__file__).parents[1] / "unit" / "istiod_lite" / "kube" / "emulator.py"
ADMIN: Permissions = {
    (r.group, r.plural): frozenset({"get", "list", "watch", "create", "patch", "delete"}) for r in RESOURCES.values()
}


def emulator_url(spawn: Spawner, tmp_path: Path, tokens: dict[str, Any] | None = None) -> str:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps(tokens or {}))
    component = spawn.start("kube-emulator", [__import__("sys").executable, str(EMULATOR), str(tokens_file)])
    return f"http://{component.addresses['api']}"


def connect(url: str, permitted: Permissions, *, list_page: int = 500) -> KubeApi:
    config = KubeConfig.from_one(cluster=Cluster(server=url), user=User(token="test-admin")).get()
    assert config is not None
    return KubeApi.connect(config, permitted, list_page=list_page)


@pytest.fixture
def api_url(spawn: Spawner, tmp_path: Path) -> Iterator[str]:
    yield emulator_url(spawn, tmp_path)


@pytest.fixture
async def admin(api_url: str) -> AsyncIterator[KubeApi]:
    api = connect(api_url, ADMIN)
    yield api
    await api.aclose()


def pod(name: str, namespace: str, node: str, ip: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name.split("-")[0], "pod-template-hash": "5f7c", **labels},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name.split('-')[0]}-5f7c",
                                 "uid": "rs-uid", "controller": True}],
        },
        "spec": {"nodeName": node, "serviceAccountName": "sa-" + name.split("-")[0],
                 "containers": [{"name": "app", "image": "x", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"podIP": ip},
    }


SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "search", "namespace": "prod"},
    "spec": {"selector": {"app": "search"}, "ports": [{"port": 80, "targetPort": "http"}], "clusterIP": "10.96.0.10"},
}
VIRTUAL_SERVICE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "search", "namespace": "prod"},
    "spec": {"hosts": ["search"], "http": [{"route": [{"destination": {"host": "search"}}]}]},
}


async def wait_for(store: KubernetesStore, predicate: Any, what: str) -> None:
    """Wait on the store's own change notification (bounded), never on a sleep."""
    with trio.move_on_after(10) as scope:
        revision = store.revision
        while not predicate(store.list()):
            revision = await store.wait_changed(revision)
    assert not scope.cancelled_caught, f"timed out waiting for {what}; store has {sorted(map(str, store.list()))}"


async def test_objects_created_in_the_cluster_reach_the_store(api_url: str, admin: KubeApi) -> None:
    namespace = {"name": "prod", "labels": {"istio.io/dataplane-mode": "ambient"}}
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace", "metadata": namespace})
    await admin.create(RESOURCES["Pod"], pod("search-a", "prod", "node-a", "10.0.0.5"))  # exists before the list
    api = connect(api_url, rbac_usage.STORE)
    store = KubernetesStore(api)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert ResourceKey("Pod", "prod", "search-a") in store.list()
        assert ResourceKey("Namespace", "", "prod") in store.list()
        await admin.create(RESOURCES["Service"], SERVICE)
        await admin.create(RESOURCES["VirtualService"], VIRTUAL_SERVICE)
        await admin.create(RESOURCES["Pod"], pod("search-b", "prod", "node-b", "10.0.0.6"))
        await wait_for(store, lambda r: {ResourceKey("Service", "prod", "search"),
                                         ResourceKey("VirtualService", "prod", "search"),
                                         ResourceKey("Pod", "prod", "search-b")} <= set(r), "the new objects")
        resources = store.list()
        assert resources[ResourceKey("Pod", "prod", "search-b")].obj == PodInfo(
            name="search-b", namespace="prod", ip="10.0.0.6", node="node-b",
            labels={"app": "search", "pod-template-hash": "5f7c"}, service_account="sa-search",
            deployment="search", container_ports={"http": 8080}, redirected=False,  # no node agent has annotated it
        )
        service = resources[ResourceKey("Service", "prod", "search")].obj
        assert service.spec.cluster_ip == "10.96.0.10"  # typed by the schemas package, as from files
        assert resources[ResourceKey("VirtualService", "prod", "search")].obj.spec.hosts == ("search",)
        assert store.errors == {}
        nursery.cancel_scope.cancel()
    await api.aclose()


async def test_a_watch_broken_by_410_relists_without_losing_or_duplicating(api_url: str, admin: KubeApi) -> None:
    for index in range(3):
        await admin.create(RESOURCES["Pod"], pod(f"web-{index}", "shop", "node-a", f"10.0.1.{index}"))
    api = connect(api_url, rbac_usage.STORE)
    store = KubernetesStore(api)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        pods = {key.name for key in store.list() if key.kind == "Pod"}
        assert pods == {"web-0", "web-1", "web-2"}
        # While the watch is broken: web-1 is deleted and web-9 created *without* watch events, then 410.
        async with httpx2.AsyncClient(base_url=api_url) as raw:
            answer = await raw.post("/emulator/compact", json={
                "delete": [["v1/pods", "shop", "web-1"]],
                "create": [["v1/pods", pod("web-9", "shop", "node-b", "10.0.1.9")]],
            })
            assert answer.status_code == 200
        await wait_for(store, lambda r: ResourceKey("Pod", "shop", "web-9") in r, "the re-list after 410")
        assert store.relists["Pod"] >= 1
        pods_after = sorted(key.name for key in store.list() if key.kind == "Pod")
        assert pods_after == ["web-0", "web-2", "web-9"]  # web-1 gone although no DELETED event was sent
        # And the watch resumed from the new list: later changes still arrive, exactly once.
        await admin.create(RESOURCES["Pod"], pod("web-10", "shop", "node-a", "10.0.1.10"))
        await wait_for(store, lambda r: ResourceKey("Pod", "shop", "web-10") in r, "an event after the re-list")
        assert sorted(key.name for key in store.list() if key.kind == "Pod") == ["web-0", "web-10", "web-2", "web-9"]
        nursery.cancel_scope.cancel()
    await api.aclose()


async def test_calls_outside_the_declared_verbs_are_refused_before_reaching_the_server(api_url: str) -> None:
    api = connect(api_url, rbac_usage.STORE)
    with pytest.raises(UndeclaredApiCall, match="create /pods"):
        await api.create(RESOURCES["Pod"], pod("x-0", "default", "n", "10.0.0.1"))
    await api.aclose()


async def test_the_root_cert_configmap_is_created_then_only_updated_when_the_bundle_changes(
    api_url: str, admin: KubeApi
) -> None:
    api = connect(api_url, rbac_usage.ROOT_CERT_NAMESPACED)
    assert await publish_root_cert(api, "istio-system", "ROOTS-1") is True
    assert await publish_root_cert(api, "istio-system", "ROOTS-1") is False
    assert await publish_root_cert(api, "istio-system", "ROOTS-2") is True
    configmap = await admin.get(RESOURCES["ConfigMap"], "istio-ca-root-cert", "istio-system")
    assert configmap is not None and configmap["data"] == {"root-cert.pem": "ROOTS-2"}
    await api.aclose()


async def _resume_after_watches_end(api_url: str, admin: KubeApi, *, bookmark: bool) -> KubernetesStore:
    """Advance the version with Pods only, optionally send bookmarks, then end every watch (history forgotten)."""
    api = connect(api_url, rbac_usage.STORE)
    store = KubernetesStore(api)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for index in range(3):
            await admin.create(RESOURCES["Pod"], pod(f"web-{index}", "shop", "node-a", f"10.0.1.{index}"))
        await wait_for(store, lambda r: ResourceKey("Pod", "shop", "web-2") in r, "the pods")
        async with httpx2.AsyncClient(base_url=api_url) as raw:
            if bookmark:  # each stream carries its bookmark before its end, so the order is fixed
                assert (await raw.post("/emulator/bookmark")).status_code == 200
            assert (await raw.post("/emulator/end-watches")).status_code == 200
        await admin.create(RESOURCES["Service"], SERVICE)
        await wait_for(store, lambda r: ResourceKey("Service", "prod", "search") in r, "a Service after the resume")
        nursery.cancel_scope.cancel()
    await api.aclose()
    return store


async def test_bookmarks_let_every_watch_resume_without_a_relist(api_url: str, admin: KubeApi) -> None:
    store = await _resume_after_watches_end(api_url, admin, bookmark=True)
    assert set(store.relists.values()) == {0}


async def test_without_bookmarks_quiet_kinds_resume_from_a_forgotten_version_and_relist(
    api_url: str, admin: KubeApi
) -> None:
    store = await _resume_after_watches_end(api_url, admin, bookmark=False)
    assert store.relists["Service"] >= 1  # its last version predates the pods: 410, then a list
    assert store.relists["Pod"] == 0  # the pod events carried the newest version


async def test_the_server_sees_config_and_pods_apart(api_url: str, admin: KubeApi) -> None:
    await admin.create(RESOURCES["Pod"], pod("search-a", "prod", "node-a", "10.0.0.5"))
    await admin.create(RESOURCES["Service"], SERVICE)
    api = connect(api_url, rbac_usage.STORE)
    store = KubernetesStore(api)
    config, pods = ClusterConfig(store), ClusterPods(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(config.run)
        assert set(config.list()) == {ResourceKey("Service", "prod", "search")}
        assert pods.pods == [Pod(name="search-a", namespace="prod", ip="10.0.0.5", node="node-a",
                                 labels={"app": "search", "pod-template-hash": "5f7c"}, service_account="sa-search",
                                 deployment="search", container_ports={"http": 8080})]
        assert config.revision == store.revision
        nursery.cancel_scope.cancel()
    await api.aclose()


async def test_an_invalid_object_is_reported_and_left_out_while_the_rest_stays_in_force(
    api_url: str, admin: KubeApi
) -> None:
    bad = {**VIRTUAL_SERVICE, "metadata": {"name": "bad", "namespace": "prod"},
           "spec": {"hosts": ["search"], "http": [{"route": [{"destination": {"host": "search"}, "weight": "lots"}]}]}}
    await admin.create(RESOURCES["VirtualService"], VIRTUAL_SERVICE)
    await admin.create(RESOURCES["VirtualService"], bad)
    api = connect(api_url, rbac_usage.STORE)
    store = KubernetesStore(api)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert ResourceKey("VirtualService", "prod", "search") in store.list()
        assert ResourceKey("VirtualService", "prod", "bad") not in store.list()
        (problem,) = store.errors["kubernetes:VirtualService/prod/bad"]
        assert "spec.http[0].route[0].weight: expected integer" in problem
        fixed = {"spec": {"http": [{"route": [{"destination": {"host": "search"}, "weight": 100}]}]}}
        await admin.patch(RESOURCES["VirtualService"], "bad", "prod", fixed)
        await wait_for(store, lambda r: ResourceKey("VirtualService", "prod", "bad") in r, "the fixed object")
        assert store.errors == {}
        nursery.cancel_scope.cancel()
    await api.aclose()


async def test_lists_are_read_page_by_page(api_url: str, admin: KubeApi) -> None:
    for index in range(5):
        await admin.create(RESOURCES["Pod"], pod(f"web-{index}", "shop", "node-a", f"10.0.1.{index}"))
    api = connect(api_url, rbac_usage.STORE, list_page=2)
    items, version = await api.list(RESOURCES["Pod"])
    assert sorted(item["metadata"]["name"] for item in items) == [f"web-{i}" for i in range(5)]
    assert all(item["kind"] == "Pod" and item["apiVersion"] == "v1" for item in items)
    assert int(version) > 0
    await api.aclose()
