"""`meshctl up` in netns mode, driven as a user would: pods in network namespaces, nothing left behind.

As root with iptables (how CI runs) ``--capture auto`` picks netns mode. The apps are unmodified:
``meshctl exec`` enters the client pod's namespace (with its resolv.conf view) and plain ``curl`` reaches
``python3 -m http.server`` in another pod by service name. SIGTERM drains and removes every namespace,
veth and rule; after a SIGKILL of the runner the next `up` on the same state directory removes what
the dead one left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshctl.runner.netns_mode import fabric_prefix
from tests.netns.helpers import leftovers
from tests.support.processes import Component, Spawner, exited

pytestmark = pytest.mark.netns

MESHCTL = str(Path(sys.executable).with_name("meshctl"))

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: search, namespace: prod}
---
apiVersion: v1
kind: Service
metadata: {name: search-api, namespace: prod}
spec:
  selector: {app: search}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: search, namespace: prod}
spec:
  selector: {matchLabels: {app: search}}
  template:
    metadata: {labels: {app: search}}
    spec:
      serviceAccountName: search
      nodeName: node-2
      containers:
      - name: app
        command: [python3, -m, http.server, --bind, $(POD_IP), "8080"]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: prod}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      nodeName: node-1
      containers:
      - name: client
        command: [sleep, "3600"]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: old, namespace: legacy}
spec:
  selector: {matchLabels: {app: old}}
  template:
    metadata: {labels: {app: old}}
    spec:
      nodeName: node-1
      containers:
      - name: old
        command: [sleep, "3600"]
"""


def meshctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def status(state: Path) -> dict[str, Any]:
    result = meshctl("status", "-o", "json", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def start(spawn: Spawner, tmp_path: Path, name: str) -> tuple[Component, Path]:
    manifests = tmp_path / "app.yaml"
    manifests.write_text(APP)
    state = tmp_path / "state"
    up = spawn.start(name, [MESHCTL, "up", "-f", str(manifests), "--state-dir", str(state)], wait_ready=False)
    up.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=120)
    return up, state


def nothing_left(state: Path) -> dict[str, list[str]]:
    return leftovers(fabric_prefix(state))


@pytest.fixture
def mesh(spawn: Spawner, tmp_path: Path) -> Iterator[tuple[Component, Path]]:
    up, state = start(spawn, tmp_path, "meshctl-up")
    yield up, state
    if up.proc.poll() is None:
        up.signal(signal.SIGTERM)
        up.proc.wait(timeout=60)


def test_auto_picks_netns_and_exec_curl_reaches_the_service_by_name(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    assert any(line.startswith("capture mode: netns (auto:") for line in up.stdout_lines)
    document = status(state)
    assert document["capture"] == "netns"
    pods = {p["deployment"]: p for p in document["pods"]}
    assert pods["search"]["ip"].startswith("198.18.") and pods["search"]["ready"]
    assert pods["client"]["captured"] and not pods["old"]["captured"]  # legacy is not enrolled
    for url in ("http://search-api.prod.svc.cluster.local:8080/", "http://search-api:8080/"):
        result = meshctl("exec", "-n", "prod", "client", "--state-dir", str(state), "--",
                         "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", url)
        assert result.stdout == "200", (url, result.stdout, result.stderr)
    logs = meshctl("logs", "-n", "prod", "search", "--state-dir", str(state))
    assert f'{pods["client"]["ip"]} - - ' in logs.stdout  # the server saw the client pod's own address


def test_sigterm_removes_every_namespace_and_process(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    document = status(state)
    pids = [p["pid"] for p in (*document["pods"], *document["proxies"]) if isinstance(p.get("pid"), int)]
    assert nothing_left(state)["netns"]  # the pods' namespaces exist while the mesh runs
    up.signal(signal.SIGTERM)
    assert up.proc.wait(timeout=60) == 0
    assert nothing_left(state) == {"netns": [], "links": [], "mounts": []}
    assert all(exited(pid) for pid in pids)
    assert not (state / "fabric.json").exists()


def test_the_next_up_removes_what_a_sigkilled_runner_left(spawn: Spawner, tmp_path: Path) -> None:
    first, state = start(spawn, tmp_path, "meshctl-up-1")
    pids = [p["pid"] for p in status(state)["pods"] if isinstance(p.get("pid"), int)]
    first.proc.kill()
    first.proc.wait(timeout=10)
    deadline = time.monotonic() + 20  # its watchdog stops the processes; the namespaces stay for now
    while not all(exited(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(exited(pid) for pid in pids)
    assert nothing_left(state)["netns"] and (state / "fabric.json").exists()

    second, _ = start(spawn, tmp_path, "meshctl-up-2")
    assert any("removed the pod network an earlier runner" in line for line in second.stdout_lines)
    second.signal(signal.SIGTERM)
    assert second.proc.wait(timeout=60) == 0
    assert nothing_left(state) == {"netns": [], "links": [], "mounts": []}
    assert os.path.exists(state)  # the state directory itself is the user's
