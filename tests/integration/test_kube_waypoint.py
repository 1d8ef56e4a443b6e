"""The waypoint controller against the API emulator: a waypoint Gateway gets its ServiceAccount, Deployment
and Service (owned by the Gateway) and Accepted/Programmed status; other Gateways are left alone."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.waypoint_controller import WaypointController
from istiod_lite.kube.waypoint_objects import WaypointSettings
from tests.integration.test_kube_store import ADMIN, connect, emulator_url, pod
from tests.support.processes import Spawner

SETTINGS = WaypointSettings(image="ambient-mesh:test", trust_domain="example.org")


@pytest.fixture
def api_url(spawn: Spawner, tmp_path: Path) -> str:
    return emulator_url(spawn, tmp_path)


@pytest.fixture
async def admin(api_url: str) -> AsyncIterator[KubeApi]:
    api = connect(api_url, ADMIN)
    yield api
    await api.aclose()


def gateway(name: str, gateway_class: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "prod", "labels": {"istio.io/waypoint-for": "service"}},
        "spec": {"gatewayClassName": gateway_class,
                 "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]},
    }


async def programmed(store: KubernetesStore, name: str) -> Mapping[str, Any]:
    with trio.fail_after(10):
        revision = store.revision
        while True:
            found = store.objects("Gateway").get(("prod", name))
            conditions = {c["type"]: c for c in ((found or {}).get("status") or {}).get("conditions", [])}
            if conditions.get("Programmed", {}).get("status") == "True":
                assert found is not None
                return found
            revision = await store.wait_changed(revision)


async def test_a_waypoint_gateway_gets_owned_objects_and_status(api_url: str, admin: KubeApi) -> None:
    created = await admin.create(RESOURCES["Gateway"], gateway("waypoint", "istio-waypoint"))
    await admin.create(RESOURCES["Gateway"], gateway("ingress", "istio"))
    api = connect(api_url, rbac_usage.ISTIOD)
    store = KubernetesStore(api, kinds=("Gateway", "Pod"))
    controller = WaypointController(api, store, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(controller.run)
        settled = await programmed(store, "waypoint")

        owner = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "name": "waypoint",
                 "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
        deployment = await admin.get(RESOURCES["Deployment"], "waypoint", "prod")
        service = await admin.get(RESOURCES["Service"], "waypoint", "prod")
        account = await admin.get(RESOURCES["ServiceAccount"], "waypoint", "prod")
        assert deployment is not None and service is not None and account is not None
        for obj in (deployment, service, account):
            assert obj["metadata"]["ownerReferences"] == [owner]
            assert obj["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "waypoint"
        template = deployment["spec"]["template"]
        assert template["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
        assert template["spec"]["serviceAccountName"] == "waypoint"
        assert "spiffe://example.org/ns/prod/sa/waypoint" in template["spec"]["containers"][0]["args"]
        assert service["spec"]["selector"] == {"gateway.networking.k8s.io/gateway-name": "waypoint"}
        assert {p["port"] for p in service["spec"]["ports"]} == {15008, 15021}
        conditions = {c["type"]: c["status"] for c in settled["status"]["conditions"]}
        assert conditions == {"Accepted": "True", "Programmed": "True"}
        assert settled["status"]["addresses"] == [{"type": "Hostname", "value": "waypoint.prod.svc.cluster.local"}]

        # The other class is not ours: nothing created, no status written.
        assert await admin.get(RESOURCES["Deployment"], "ingress", "prod") is None
        assert "status" not in store.objects("Gateway")[("prod", "ingress")]

        # Reconciling again (any store change triggers it) writes nothing: versions stay put.
        versions = (deployment["metadata"]["resourceVersion"], settled["metadata"]["resourceVersion"])
        passes = controller.reconciles
        await admin.create(RESOURCES["Pod"], pod("unrelated-0", "prod", "node-a", "10.0.0.9"))
        with trio.fail_after(10):
            await controller.wait_reconciled(passes)
        again = await admin.get(RESOURCES["Deployment"], "waypoint", "prod")
        assert again is not None
        gateway_now = store.objects("Gateway")[("prod", "waypoint")]
        assert (again["metadata"]["resourceVersion"], gateway_now["metadata"]["resourceVersion"]) == versions
        nursery.cancel_scope.cancel()
    await api.aclose()


async def test_a_drifted_deployment_is_put_back(api_url: str, admin: KubeApi) -> None:
    await admin.create(RESOURCES["Gateway"], gateway("waypoint", "istio-waypoint"))
    api = connect(api_url, rbac_usage.ISTIOD)
    store = KubernetesStore(api, kinds=("Gateway", "Pod"))
    controller = WaypointController(api, store, SETTINGS)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(controller.run)
        await programmed(store, "waypoint")
        await admin.patch(RESOURCES["Deployment"], "waypoint", "prod", {"spec": {"replicas": 0}})
        restored: dict[str, Any] | None = None
        with trio.fail_after(10):
            for nudge in range(20):  # a pass already under way may have read the Deployment before the patch
                passes = controller.reconciles
                await admin.create(RESOURCES["Pod"], pod(f"nudge-{nudge}", "prod", "node-a", "10.0.0.8"))
                await controller.wait_reconciled(passes)
                restored = await admin.get(RESOURCES["Deployment"], "waypoint", "prod")
                if restored is not None and restored["spec"]["replicas"] == 1:
                    break
        assert restored is not None and restored["spec"]["replicas"] == 1
        nursery.cancel_scope.cancel()
    await api.aclose()
