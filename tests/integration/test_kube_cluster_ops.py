"""meshctl's cluster operations against the API emulator: enroll a namespace, apply a waypoint and
manifests — and, with the store and waypoint controller running, the waypoint gets deployed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi
from istiod_lite.kube.cluster_ops import (
    MESHCTL,
    ClusterOperationError,
    apply_manifests,
    apply_waypoint,
    enroll_namespace,
    waypoint_gateway,
)
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.waypoint_controller import WaypointController
from istiod_lite.kube.waypoint_objects import WaypointSettings
from tests.integration.test_kube_store import ADMIN, SERVICE, connect, emulator_url
from tests.support.processes import Spawner


@pytest.fixture
def api_url(spawn: Spawner, tmp_path: Path) -> str:
    return emulator_url(spawn, tmp_path)


@pytest.fixture
async def meshctl(api_url: str) -> AsyncIterator[KubeApi]:
    admin = connect(api_url, ADMIN)
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": "prod", "labels": {"team": "search"}}})
    await admin.aclose()
    api = connect(api_url, MESHCTL)
    yield api
    await api.aclose()


async def test_enroll_and_unenroll_a_namespace(meshctl: KubeApi) -> None:
    enrolled = await enroll_namespace(meshctl, "prod")
    assert enrolled["metadata"]["labels"] == {"team": "search", "istio.io/dataplane-mode": "ambient"}
    left = await enroll_namespace(meshctl, "prod", None)
    assert left["metadata"]["labels"] == {"team": "search"}
    with pytest.raises(ClusterOperationError, match="namespace nope does not exist"):
        await enroll_namespace(meshctl, "nope")


async def test_apply_creates_then_configures(meshctl: KubeApi) -> None:
    assert await apply_manifests(meshctl, [SERVICE]) == ["Service/prod/search created"]
    changed = {**SERVICE, "spec": {"selector": {"app": "search"}, "ports": [{"port": 8080, "targetPort": "http"}]}}
    assert await apply_manifests(meshctl, [changed]) == ["Service/prod/search configured"]
    stored = await meshctl.get(RESOURCES["Service"], "search", "prod")
    assert stored is not None and stored["spec"]["ports"] == [{"port": 8080, "targetPort": "http"}]
    with pytest.raises(ClusterOperationError, match="cannot apply kind 'ConfigMap'"):
        await apply_manifests(meshctl, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}])


async def test_waypoint_apply_is_deployed_by_the_controller(api_url: str, meshctl: KubeApi) -> None:
    done = await apply_waypoint(meshctl, "prod", traffic_for="service", enroll=True)
    assert done == ["Gateway/prod/waypoint created", "Namespace/prod labeled istio.io/use-waypoint=waypoint"]
    namespace = await meshctl.get(RESOURCES["Namespace"], "prod")
    assert namespace is not None and namespace["metadata"]["labels"]["istio.io/use-waypoint"] == "waypoint"

    istiod = connect(api_url, rbac_usage.ISTIOD)
    store = KubernetesStore(istiod, kinds=("Gateway",))
    controller = WaypointController(istiod, store, WaypointSettings(image="ambient-mesh:test"))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(controller.run)
        with trio.fail_after(10):
            while True:
                passes = controller.reconciles
                deployment = await meshctl.get(RESOURCES["Deployment"], "waypoint", "prod")
                if deployment is not None:
                    break
                await controller.wait_reconciled(passes)
        assert deployment["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "waypoint"
        nursery.cancel_scope.cancel()
    await istiod.aclose()


def test_waypoint_traffic_type_is_checked() -> None:
    with pytest.raises(ClusterOperationError, match="use one of service, workload, all, none"):
        waypoint_gateway("prod", traffic_for="everything")
