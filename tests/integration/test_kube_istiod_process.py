"""``python -m istiod_lite.kube`` as a process against the API emulator: ready once the cluster is listed,
pushes the cluster's pods to a ztunnel that presents a ServiceAccount token, deploys a waypoint Gateway,
and publishes its trust bundle as the istio-ca-root-cert ConfigMap."""

from __future__ import annotations

import os
import sys
from contextlib import aclosing
from pathlib import Path

import trio
import yaml

from istiod_lite.kube.api import RESOURCES
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from tests.integration.test_kube_push import TYPES, Recorder, until
from tests.integration.test_kube_store import ADMIN, connect, emulator_url, pod
from tests.integration.test_kube_tokenreview import ZTUNNEL, bound, ztunnel_pod
from tests.integration.test_kube_waypoint import gateway
from tests.support.processes import Spawner

REPO = Path(__file__).parents[2]


def kubeconfig(path: Path, url: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "istiod", "user": {"token": "istiod-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "istiod"}}],
    }))
    return path


async def test_istiod_on_kubernetes(spawn: Spawner, tmp_path: Path) -> None:
    url = emulator_url(spawn, tmp_path, {"tok-a": bound(ZTUNNEL, "ztunnel-a", "uid-a")})
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "prod", "labels": {"istio.io/dataplane-mode": "ambient"}}})
    await admin.create(RESOURCES["Pod"], ztunnel_pod("ztunnel-a", "uid-a", "node-a"))
    await admin.create(RESOURCES["Pod"], pod("search-a", "prod", "node-a", "10.0.0.5"))
    istiod = spawn.start("istiod-kube", [
        sys.executable, "-m", "istiod_lite.kube", "--state-dir", str(tmp_path / "state"),
        "--kubeconfig", str(kubeconfig(tmp_path / "kubeconfig", url)), "--namespace", "istio-system",
        "--host", "127.0.0.1", "--admin-host", "127.0.0.1", "--control-port", "0", "--admin-port", "0",
        "--waypoint-image", "ambient-mesh:test",
    ], env={"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert istiod.ready["store"] == "kubernetes"

    configmap = await admin.get(RESOURCES["ConfigMap"], "istio-ca-root-cert", "istio-system")
    assert configmap is not None
    roots = configmap["data"]["root-cert.pem"].encode()

    proxy = Recorder()
    client = PushClient(f"wss://{istiod.addresses['control']}/v1/xds", "tok-a", control_plane_context(roots),
                        TYPES, proxy, backoff=Backoff(initial=0.05, maximum=0.2))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await until(client, lambda: any(w.get("name") == "search-a" for w in proxy.state["workload"].values()),
                    "the cluster's pod as a pushed workload")
        await admin.create(RESOURCES["Gateway"], gateway("waypoint", "istio-waypoint"))
        with trio.fail_after(10):  # watch Deployments until the controller's appears
            async with aclosing(admin.watch(RESOURCES["Deployment"], "")) as events:
                async for event in events:
                    if event.object["metadata"]["name"] == "waypoint":
                        break
        nursery.cancel_scope.cancel()
    await admin.aclose()
