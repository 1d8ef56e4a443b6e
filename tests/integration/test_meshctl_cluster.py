"""`meshctl --kubeconfig …` against a Kubernetes API emulator: the state-changing verbs write to the cluster.

The CLI runs as a subprocess, as a user runs it, with a kubeconfig pointing at the emulator (kmock plus
our resourceVersion/watch layer, the same one the store tests use). What each verb left is read back
from the API server. Nothing here ran against a real cluster.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from istiod_lite.kube.api import RESOURCES, KubeApi
from tests.integration.test_kube_store import ADMIN, connect, emulator_url
from tests.support.processes import Spawner

MESHCTL = str(Path(sys.executable).with_name("meshctl"))

VIRTUAL_SERVICE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: search, namespace: prod}
spec:
  hosts: [search]
  http:
  - route: [{destination: {host: search}}]
"""


def meshctl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
async def cluster(spawn: Spawner, tmp_path: Path) -> AsyncIterator[tuple[Path, KubeApi]]:
    url = emulator_url(spawn, tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "admin", "user": {"token": "test-admin"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "admin"}}],
    }))
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Namespace"], {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": "prod", "labels": {"team": "search"}}})
    yield kubeconfig, admin
    await admin.aclose()


async def run(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: meshctl(kubeconfig, *args))


async def labels(admin: KubeApi, namespace: str) -> dict[str, Any]:
    found = await admin.get(RESOURCES["Namespace"], namespace)
    assert found is not None
    return dict(found["metadata"].get("labels") or {})


async def test_namespace_enroll_and_unenroll_change_only_the_label(cluster: tuple[Path, KubeApi]) -> None:
    kubeconfig, admin = cluster
    enrolled = await run(kubeconfig, "namespace", "enroll", "prod")
    assert enrolled.returncode == 0, enrolled.stderr
    assert await labels(admin, "prod") == {"team": "search", "istio.io/dataplane-mode": "ambient"}
    left = await run(kubeconfig, "namespace", "unenroll", "prod")
    assert left.returncode == 0, left.stderr
    assert await labels(admin, "prod") == {"team": "search"}


async def test_waypoint_apply_creates_the_gateway_and_points_the_namespace_at_it(
    cluster: tuple[Path, KubeApi],
) -> None:
    kubeconfig, admin = cluster
    result = await run(kubeconfig, "waypoint", "apply", "-n", "prod", "--enroll-namespace")
    assert result.returncode == 0, result.stderr
    gateway = await admin.get(RESOURCES["Gateway"], "waypoint", "prod")
    assert gateway is not None and gateway["spec"]["gatewayClassName"] == "istio-waypoint"
    assert gateway["metadata"]["labels"]["istio.io/waypoint-for"] == "service"
    assert (await labels(admin, "prod"))["istio.io/use-waypoint"] == "waypoint"
    assert "Gateway/prod/waypoint created" in result.stdout


async def test_apply_creates_then_configures_and_canary_set_writes_the_split(
    cluster: tuple[Path, KubeApi], tmp_path: Path,
) -> None:
    kubeconfig, admin = cluster
    manifest = tmp_path / "vs.yaml"
    manifest.write_text(VIRTUAL_SERVICE)
    first = await run(kubeconfig, "apply", "-f", str(manifest))
    again = await run(kubeconfig, "apply", "-f", str(manifest))
    assert (first.stdout.strip(), again.stdout.strip()) == (
        "VirtualService/prod/search created", "VirtualService/prod/search configured")
    canary = await run(kubeconfig, "canary", "set", "search", "-n", "prod", "v1=90", "v2=10")
    assert canary.returncode == 0, canary.stderr
    virtual_service = await admin.get(RESOURCES["VirtualService"], "search", "prod")
    destination_rule = await admin.get(RESOURCES["DestinationRule"], "search", "prod")
    assert virtual_service is not None and destination_rule is not None
    weights = {r["destination"]["subset"]: r["weight"] for r in virtual_service["spec"]["http"][0]["route"]}
    assert weights == {"v1": 90, "v2": 10}
    assert {s["name"] for s in destination_rule["spec"]["subsets"]} == {"v1", "v2"}


async def test_an_invalid_manifest_is_refused_before_anything_is_sent(
    cluster: tuple[Path, KubeApi], tmp_path: Path,
) -> None:
    kubeconfig, admin = cluster
    bad = tmp_path / "bad.yaml"
    bad.write_text(VIRTUAL_SERVICE.replace("hosts: [search]", "hosts: search"))
    result = await run(kubeconfig, "apply", "-f", str(bad))
    assert result.returncode != 0 and "hosts" in result.stderr
    assert await admin.get(RESOURCES["VirtualService"], "search", "prod") is None


async def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
    }))
    result = await run(kubeconfig, "namespace", "enroll", "prod")
    assert result.returncode == 1
    assert result.stderr.startswith("meshctl: ") and "Traceback" not in result.stderr
