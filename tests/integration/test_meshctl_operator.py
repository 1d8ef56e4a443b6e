"""Operator verbs against a live `meshctl up` mesh, driven as a user would: `meshctl canary set`
moves the traffic `meshctl exec … curl` observes through the waypoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from meshctl.demo import HOST, demo_manifests
from tests.support.processes import Component, Spawner

MESHCTL = str(Path(sys.executable).with_name("meshctl"))

CLIENT = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: prod}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: prod}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers:
      - name: client
        command: [sleep, "3600"]
"""


def meshctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def versions_seen(state: Path, requests: int) -> Counter[str]:
    """Ask the search service ``requests`` times from the client pod; count the versions that answered."""
    script = f"for i in $(seq {requests}); do curl -s -m 5 http://{HOST}:8080/; echo @@; done"
    result = meshctl("exec", "-n", "prod", "client", "--state-dir", str(state), "--", "sh", "-c", script, timeout=90)
    assert result.returncode == 0, result.stderr
    bodies = [body for body in result.stdout.split("@@") if body.strip()]
    return Counter(json.loads(body)["version"] for body in bodies)


def settle(state: Path, expected: str, timeout: float = 45) -> None:
    """Until only ``expected`` answers; generous: the weights travel file → istiod_lite → push → waypoint,
    and on a loaded 2-core machine each hop can take seconds."""
    deadline = time.monotonic() + timeout
    while set(versions_seen(state, 5)) != {expected}:
        assert time.monotonic() < deadline, f"traffic did not move to {expected} within {timeout}s"
        time.sleep(0.5)


def start_mesh(spawn: Spawner, tmp_path: Path, *, with_waypoint: bool) -> tuple[Component, Path]:
    """The demo's apps (search-service v1 and v2) without its routing and load, plus a client pod;
    with or without the demo's waypoint (and the namespace's use-waypoint label)."""
    documents = []
    for doc in yaml.safe_load_all(demo_manifests()):
        if doc["kind"] in ("VirtualService", "DestinationRule") or doc["metadata"]["name"] == "loadgen":
            continue
        if not with_waypoint:
            if doc["kind"] == "Gateway":
                continue
            if doc["kind"] == "Namespace":
                doc["metadata"]["labels"].pop("istio.io/use-waypoint")
        documents.append(doc)
    manifests = tmp_path / "app.yaml"
    manifests.write_text(yaml.safe_dump_all(documents) + "---\n" + CLIENT)
    state = tmp_path / "state"
    up = spawn.start("meshctl-up", [MESHCTL, "up", "-f", str(manifests), "--capture", "proxy",
                                       "--state-dir", str(state)], wait_ready=False)
    up.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=90)
    return up, state


@pytest.fixture
def mesh(spawn: Spawner, tmp_path: Path) -> Iterator[Path]:
    up, state = start_mesh(spawn, tmp_path, with_waypoint=True)
    yield state
    _drain(up)


def _drain(up: Component) -> None:
    up.signal(signal.SIGTERM)
    up.proc.wait(timeout=60)


@pytest.mark.slow
def test_canary_set_moves_observed_traffic_and_rolls_back(mesh: Path) -> None:
    state = mesh
    moved = meshctl("canary", "set", "search-api", "-n", "prod", "v1=0", "v2=100", "--state-dir", str(state))
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.splitlines() == [
        "virtualservice prod/search-api created",
        "destinationrule prod/search-api created",
    ]
    settle(state, "v2")
    assert versions_seen(state, 20) == Counter({"v2": 20})

    back = meshctl("canary", "set", "search-api", "-n", "prod", "v1=100", "v2=0", "--state-dir", str(state))
    assert back.returncode == 0, back.stderr
    settle(state, "v1")
    assert versions_seen(state, 20) == Counter({"v1": 20})


@pytest.mark.slow
def test_ztunnel_config_shows_what_each_ztunnel_holds(mesh: Path) -> None:
    state = mesh
    workloads = meshctl("ztunnel-config", "workloads", "-o", "json", "--state-dir", str(state))
    assert workloads.returncode == 0, workloads.stderr
    by_node = json.loads(workloads.stdout)
    assert sorted(by_node) == ["node-1", "node-2"]  # meshctl up names its nodes from 1
    names = {w["name"] for node in by_node.values() for w in node}
    assert {"search-service-v1-0", "search-service-v2-0", "client-0"} <= names

    certificates = meshctl("ztunnel-config", "certificates", "--state-dir", str(state))
    assert certificates.returncode == 0, certificates.stderr
    lines = certificates.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "IDENTITY", "STATE"]
    assert any("spiffe://cluster.local/ns/prod/sa/client" in line and "Available" in line for line in lines)

    table = meshctl("ztunnel-config", "services", "--node", "node-1", "--state-dir", str(state))
    assert table.returncode == 0 and f"{HOST}" in table.stdout
    missing = meshctl("ztunnel-config", "services", "--node", "nope", "--state-dir", str(state))
    assert missing.returncode == 1 and "no ztunnel on node nope" in missing.stderr


VIRTUAL_SERVICE = f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: search-api, namespace: prod}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - destination: {{host: {HOST}, subset: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: search-api, namespace: prod}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"""


@pytest.mark.slow
def test_waypoint_apply_enroll_namespace_then_a_virtual_service_changes_routing(
    spawn: Spawner, tmp_path: Path
) -> None:
    up, state = start_mesh(spawn, tmp_path, with_waypoint=False)
    try:
        before = versions_seen(state, 20)
        assert set(before) == {"v1", "v2"}, "without a waypoint, ztunnel spreads requests over both versions"

        applied = meshctl("waypoint", "apply", "-n", "prod", "--enroll-namespace", "--wait", "--state-dir", str(state),
                          timeout=90)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.splitlines() == [
            # "created": the namespace came from a manifest file; the label goes into the applied
            # store, which overrides the file's copy (istiod_lite reports per store).
            "namespace prod created", "gateway prod/waypoint created", "waypoint prod/waypoint ready",
        ]
        listed = meshctl("waypoint", "list", "--state-dir", str(state))
        assert listed.stdout.splitlines()[1].split() == ["prod", "waypoint", "service", "true"]
        running = meshctl("waypoint", "status", "--state-dir", str(state)).stdout.splitlines()
        assert running[0].split() == ["NAME", "READY", "ADMIN", "VIEW", "VERSION"]
        name, ready, admin, version = running[1].split()
        assert (name, ready) == ("waypoint-prod-waypoint", "true") and admin.startswith("http://127.")
        assert len(version) == 16, "the waypoint reports the content version of the view it serves"

        routes = tmp_path / "v2-only.yaml"
        routes.write_text(VIRTUAL_SERVICE)
        assert meshctl("apply", "-f", str(routes), "--state-dir", str(state)).returncode == 0
        settle(state, "v2")
        assert versions_seen(state, 20) == Counter({"v2": 20})

        deleted = meshctl("waypoint", "delete", "waypoint", "-n", "prod", "--state-dir", str(state))
        assert deleted.returncode == 0 and deleted.stdout.strip() == "gateway prod/waypoint deleted"
        assert meshctl("waypoint", "list", "--state-dir", str(state)).stdout.splitlines()[1:] == []
    finally:
        _drain(up)
