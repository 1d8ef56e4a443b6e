"""The node agent's Kubernetes loop against the API emulator: it captures this node's ambient pods,
annotates them, releases them when they opt out, and never claims a capture that failed.

The capture side here records calls instead of touching network namespaces (that part needs root and
is tested in tests/netns/); everything between the API server and it is the real code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi
from istiod_lite.kube.enrollment import EnrolledPod
from istiod_lite.kube.node_enrollment import NodeEnrollment, node_store
from meshcore.errors import MeshError
from tests.integration.test_kube_store import ADMIN, connect, emulator_url, pod
from tests.support.processes import Spawner


class CaptureFailed(MeshError):
    hint = "test"


@attrs.define
class RecordingCapture:
    calls: list[tuple[str, str]] = attrs.field(factory=list)
    fail_once: set[str] = attrs.field(factory=set)

    async def add(self, pod: EnrolledPod) -> None:
        if pod.name in self.fail_once:
            self.fail_once.discard(pod.name)
            raise CaptureFailed(f"cannot enter the netns of {pod.name}")
        self.calls.append(("add", pod.name))

    async def remove(self, pod: EnrolledPod) -> None:
        self.calls.append(("remove", pod.name))


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


async def settle(agent: NodeEnrollment, condition: Callable[[], Any], what: str) -> None:
    with trio.move_on_after(10) as scope:
        while True:
            passes = agent.passes
            if await condition():
                return
            await agent.wait_pass(passes)
    assert not scope.cancelled_caught, f"timed out waiting for {what}"


async def annotation(admin: KubeApi, namespace: str, name: str) -> str | None:
    found = await admin.get(RESOURCES["Pod"], name, namespace)
    assert found is not None
    return (found["metadata"].get("annotations") or {}).get("ambient.istio.io/redirection")


async def test_captures_annotates_and_releases_this_nodes_ambient_pods(spawn: Spawner, tmp_path: Path) -> None:
    url = emulator_url(spawn, tmp_path)
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Namespace"], namespace("shop", {"istio.io/dataplane-mode": "ambient"}))
    await admin.create(RESOURCES["Namespace"], namespace("data", {}))
    await admin.create(RESOURCES["Pod"], pod("web-0", "shop", "node-a", "10.0.0.1"))
    await admin.create(RESOURCES["Pod"], pod("web-1", "shop", "node-b", "10.0.0.2"))  # another node's
    await admin.create(RESOURCES["Pod"], pod("db-0", "data", "node-a", "10.0.0.3"))  # namespace not enrolled
    api = connect(url, rbac_usage.NODE_AGENT)
    capture = RecordingCapture(fail_once={"flaky-0"})
    store = node_store(api, "node-a")
    agent = NodeEnrollment(api, store, "node-a", capture)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(agent.run)

        async def web0_annotated() -> bool:
            return await annotation(admin, "shop", "web-0") == "enabled"

        await settle(agent, web0_annotated, "web-0 captured and annotated")
        assert capture.calls == [("add", "web-0")]
        assert await annotation(admin, "shop", "web-1") is None
        assert await annotation(admin, "data", "db-0") is None

        # A pod opts in by label although its namespace did not.
        opt_in = {"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}}
        await admin.patch(RESOURCES["Pod"], "db-0", "data", opt_in)

        async def db0_annotated() -> bool:
            return await annotation(admin, "data", "db-0") == "enabled"

        await settle(agent, db0_annotated, "db-0 captured after its label")

        # A pod opts out: released first, then its annotation goes.
        opt_out = {"metadata": {"labels": {"istio.io/dataplane-mode": "none"}}}
        await admin.patch(RESOURCES["Pod"], "web-0", "shop", opt_out)

        async def web0_released() -> bool:
            return await annotation(admin, "shop", "web-0") is None

        await settle(agent, web0_released, "web-0 released")
        assert capture.calls == [("add", "web-0"), ("add", "db-0"), ("remove", "web-0")]

        # A capture that fails is not claimed; the next change retries it.
        await admin.create(RESOURCES["Pod"], pod("flaky-0", "shop", "node-a", "10.0.0.4"))
        with trio.fail_after(10):
            while "flaky-0" in capture.fail_once:
                await agent.wait_pass(agent.passes)
        assert await annotation(admin, "shop", "flaky-0") is None
        await admin.create(RESOURCES["Pod"], pod("nudge-0", "data", "node-a", "10.0.0.5"))

        async def flaky_annotated() -> bool:
            return await annotation(admin, "shop", "flaky-0") == "enabled"

        await settle(agent, flaky_annotated, "flaky-0 captured on retry")
        assert set(agent.captured) == {p["metadata"]["uid"] for p in [
            await admin.get(RESOURCES["Pod"], "db-0", "data"), await admin.get(RESOURCES["Pod"], "flaky-0", "shop")]
            if p is not None}
        nursery.cancel_scope.cancel()
    await api.aclose()
    await admin.aclose()
