"""The node agent on Kubernetes, end to end as root: API emulator → enrollment → the pod's real namespace.

A pod is a network namespace on the fabric with a process in it (as a container runtime leaves it); the
API emulator holds the Pod and Namespace objects. The agent finds the namespace by the pod's IP through
/proc, names it under /run/netns, installs the in-pod rules and hands it to a ZDS server standing in for
ztunnel — and undoes all of it when the namespace leaves the mesh.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi
from istiod_lite.kube.node_enrollment import NodeEnrollment, node_store
from tests.integration.test_kube_store import ADMIN, connect, emulator_url, pod
from tests.support.processes import Spawner
from ztunnel.capture.agent import NodeAgent
from ztunnel.capture.fabric import Fabric, PodNetwork
from ztunnel.capture.kube_agent import KubeCapture, PodNetnsFinder
from ztunnel.capture.rules import rules_present
from ztunnel.capture.zds import WorkloadInfo
from ztunnel.capture.zds_server import ZdsServer

pytestmark = pytest.mark.netns

WEB_UID = "0f3c2a4e-7d61-4d1b-9a55-2b8c6f1e9d70"


@attrs.define
class RecordingZtunnel:
    """The ZDS handler ztunnel would be: remembers which namespace (by inode) each add handed over."""

    added: dict[str, int] = attrs.field(factory=dict)
    deleted: list[str] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        self.added[uid] = os.fstat(netns_fd).st_ino
        self._notify()

    async def on_del(self, uid: str) -> None:
        self.deleted.append(uid)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


def unmount(named: Path) -> None:
    """Whatever the test's outcome, no name of ours stays under /run/netns."""
    if os.path.ismount(named):
        subprocess.run(["umount", str(named)], check=False)
    named.unlink(missing_ok=True)


async def until(condition: Any, what: str) -> None:
    for _ in range(200):
        if await condition():
            return
        await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def annotation(admin: KubeApi, name: str, namespace: str) -> str | None:
    found = await admin.get(RESOURCES["Pod"], name, namespace)
    assert found is not None
    return (found["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection")


@pytest.fixture
async def web(fabric: Fabric, spawn: Spawner) -> AsyncIterator[PodNetwork]:
    """The pod's namespace with a process in it, at an address no other fabric on this host uses."""
    network = await fabric.create_pod("web", ip=f"198.18.{random.randrange(100, 250)}.{random.randrange(2, 250)}")
    spawn.start("sandbox", ["ip", "netns", "exec", network.netns, "sleep", "300"], wait_ready=False)
    yield network


async def test_the_agent_captures_an_ambient_pod_in_its_namespace_and_releases_it(
    web: PodNetwork, spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    url = emulator_url(spawn, tmp_path)
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "shop", "labels": {"istio.io/dataplane-mode": "ambient"}}})
    manifest = pod("web-0", "shop", "node-a", web.ip)
    manifest["metadata"]["uid"] = WEB_UID
    manifest["status"] = {"podIP": web.ip, "podIPs": [{"ip": web.ip}], "phase": "Running"}
    await admin.create(RESOURCES["Pod"], manifest)

    ztunnel = RecordingZtunnel()
    socket_path = tmp_path / "ztunnel.sock"
    await nursery.start(ZdsServer(socket_path, ztunnel).run)
    finder = PodNetnsFinder(Path("/proc"))
    api = connect(url, rbac_usage.NODE_AGENT)
    agent = NodeAgent(socket_path)
    store = node_store(api, "node-a")
    enrollment = NodeEnrollment(api, store, "node-a", KubeCapture(agent, finder))
    named = Path("/run/netns") / finder.netns_name(WEB_UID)
    try:
        nursery.start_soon(agent.run)
        await nursery.start(store.run)
        await nursery.start(enrollment.run)

        async def captured() -> bool:
            return WEB_UID in ztunnel.added and await annotation(admin, "web-0", "shop") == "enabled"

        await until(captured, "the pod to be captured and annotated")
        assert ztunnel.added[WEB_UID] == os.stat(f"/run/netns/{web.netns}").st_ino  # the pod's own namespace
        assert await trio.to_thread.run_sync(os.path.ismount, named)
        assert await rules_present(web.netns)

        await admin.patch(RESOURCES["Namespace"], "shop", None,
                          {"metadata": {"labels": {"istio.io/dataplane-mode": None}}})

        async def released() -> bool:
            return WEB_UID in ztunnel.deleted and await annotation(admin, "web-0", "shop") is None

        await until(released, "the pod to be released when its namespace leaves the mesh")
        assert not named.exists()
        assert not await rules_present(web.netns)
    finally:
        await trio.to_thread.run_sync(unmount, named)
        await api.aclose()
        await admin.aclose()


async def test_the_finder_refuses_an_address_no_namespace_holds() -> None:
    finder = PodNetnsFinder(Path("/proc"))
    assert await trio.to_thread.run_sync(finder.find_pid, "198.19.255.254") is None
