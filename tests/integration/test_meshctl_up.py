"""`meshctl up` driven as a user drives it: the CLI as a subprocess, manifests on disk, curl through
the mesh with `meshctl exec`, `meshctl status -o json`, live `meshctl apply`/`delete`, a second `up`
refused, and SIGTERM leaving no process behind.

Each test's state directory is its own tmp_path, so each mesh gets its own 127.X/16 (no port clashes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Component, Spawner, exited

MESHCTL = str(Path(sys.executable).with_name("meshctl"))
HOST = "search-api.prod.svc.cluster.local"

APP = """\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: search, namespace: prod}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: prod}
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
  replicas: 2
  selector: {matchLabels: {app: search}}
  template:
    metadata: {labels: {app: search}}
    spec:
      serviceAccountName: search
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
      serviceAccountName: client
      containers:
      - name: client
        command: [sleep, "3600"]
"""

EXTRA = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: prod}
spec:
  replicas: 2
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec:
      containers:
      - name: worker
        command: [sleep, "3600"]
"""


def meshctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)


def status(state: Path) -> dict[str, Any]:
    result = meshctl("status", "-o", "json", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_until(condition: Callable[[], bool], timeout: float, what: str, state: Path | None = None) -> None:
    """Poll ``condition``; on timeout the message carries the mesh's status file, to see what it was doing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            seen = (state / "status.json").read_text() if state and (state / "status.json").exists() else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{seen}")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mesh(spawn: Spawner, tmp_path: Path) -> Iterator[tuple[Component, Path]]:
    manifests = tmp_path / "app.yaml"
    manifests.write_text(APP)
    state = tmp_path / "state"
    up = spawn.start("meshctl-up", [MESHCTL, "up", "-f", str(manifests), "--capture", "proxy",
                                       "--state-dir", str(state)], wait_ready=False)
    up.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=90)
    yield up, state
    # Drain here rather than in the harness: a drain (proxies give connections up to 5 s) may outlast
    # the harness's grace, and a SIGKILLed runner cannot stop its children.
    up.signal(signal.SIGTERM)
    up.proc.wait(timeout=60)


@pytest.mark.slow
def test_exec_curl_reaches_the_service_by_name_through_the_mesh(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    assert any("capture mode: proxy" in line for line in up.stdout_lines)
    result = meshctl(
        "exec", "-n", "prod", "client", "--state-dir", str(state), "--",
        "curl", "-s", "-m", "10", "-w", "\\n%{http_code}", f"http://{HOST}:8080/",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("200")
    assert "Directory listing" in result.stdout  # http.server answered, through the pod's ztunnel

    document = status(state)
    client = next(p for p in document["pods"] if p["deployment"] == "client")
    env = meshctl("exec", "-n", "prod", "client", "--state-dir", str(state), "--", "env").stdout.splitlines()
    assert f"POD_IP={client['ip']}" in env
    assert f"http_proxy=http://{client['ip']}:15080" in env
    assert f"HTTP_PROXY=http://{client['ip']}:15080" in env

    logs = meshctl("logs", "-n", "prod", "search", "--state-dir", str(state))
    assert logs.returncode == 0, logs.stderr
    assert '"GET / HTTP/1.1" 200' in logs.stdout  # http.server's access log, in one of the two pods
    assert {line.split("]")[0] for line in logs.stdout.splitlines()} <= {"[search-0", "[search-1"}


@pytest.mark.slow
def test_logs_follow_prints_new_output_as_it_comes(mesh: tuple[Component, Path], spawn: Spawner) -> None:
    _, state = mesh
    follower = spawn.start(
        "logs-follow", [MESHCTL, "logs", "-f", "-n", "prod", "search", "--state-dir", str(state)], wait_ready=False
    )
    follower.wait_for_line(lambda line: "Serving HTTP on" in line, timeout=10)  # what was there already
    for _ in range(2):  # two requests: each pod may get one, at least one lands in a followed log
        meshctl("exec", "-n", "prod", "client", "--state-dir", str(state), "--",
                "curl", "-s", "-o", "/dev/null", f"http://{HOST}:8080/followed")
    line = follower.wait_for_line(lambda line: "GET /followed HTTP/1.1" in line, timeout=10)
    assert line.startswith(("[search-0] ", "[search-1] "))


@pytest.mark.slow
def test_editing_a_manifest_file_takes_effect_live(mesh: tuple[Component, Path], tmp_path: Path) -> None:
    _, state = mesh
    manifests = tmp_path / "app.yaml"
    manifests.write_text(APP.replace("replicas: 2", "replicas: 3"))

    def searches() -> list[str]:
        return sorted(p["name"] for p in status(state)["pods"] if p["deployment"] == "search" and p["ready"])

    wait_until(lambda: searches() == ["search-0", "search-1", "search-2"], 30, "a third search pod")


@pytest.mark.slow
def test_a_crashed_pod_is_restarted_and_reported(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    before = next(p for p in status(state)["pods"] if p["name"] == "search-0")
    os.kill(before["pid"], signal.SIGKILL)

    def restarted() -> bool:
        pod = next(p for p in status(state)["pods"] if p["name"] == "search-0")
        return bool(pod["restarts"] == 1 and pod["ready"] and pod["pid"] not in (None, before["pid"]))

    wait_until(restarted, 30, "search-0 to be restarted")
    up.wait_for_line(lambda line: "pod-prod-search-0 exited with" in line and "restarting in" in line, timeout=5)
    after = next(p for p in status(state)["pods"] if p["name"] == "search-0")
    assert after["ip"] == before["ip"]  # same pod, same address


@pytest.mark.slow
def test_status_json_names_pods_and_proxies(mesh: tuple[Component, Path]) -> None:
    _, state = mesh
    document = status(state)
    pods = {p["name"]: p for p in document["pods"]}
    assert set(pods) == {"search-0", "search-1", "client-0"}
    for pod in pods.values():
        assert {"namespace", "name", "deployment", "ip", "node", "identity", "ready"} <= set(pod)
        assert pod["ready"] is True
        assert pod["ip"].startswith("127.")
        assert "env" not in pod  # the environment is for exec, not for the listing
    assert pods["search-0"]["identity"] == "spiffe://cluster.local/ns/prod/sa/search"
    assert pods["client-0"]["deployment"] == "client"
    assert len({p["ip"] for p in pods.values()}) == 3
    kinds = sorted(p["kind"] for p in document["proxies"])
    assert kinds == ["istiod", "ztunnel", "ztunnel"]
    for proxy in document["proxies"]:
        assert {"kind", "name", "node", "admin", "metrics", "ready"} <= set(proxy)
        assert proxy["ready"] is True
    ztunnel_nodes = sorted(p["node"] for p in document["proxies"] if p["kind"] == "ztunnel")
    assert ztunnel_nodes == ["node-1", "node-2"]


@pytest.mark.slow
def test_second_up_on_the_same_state_dir_is_refused(mesh: tuple[Component, Path], tmp_path: Path) -> None:
    up, state = mesh
    result = meshctl("up", "-f", str(tmp_path / "app.yaml"), "--capture", "proxy", "--state-dir", str(state))
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert str(up.proc.pid) in result.stderr
    assert up.proc.poll() is None  # the first mesh is untouched
    assert status(state)["runner_pid"] == up.proc.pid


@pytest.mark.slow
def test_applied_deployment_starts_pods_live_and_delete_stops_them(
    mesh: tuple[Component, Path], tmp_path: Path
) -> None:
    _, state = mesh
    extra = tmp_path / "worker.yaml"
    extra.write_text(EXTRA)
    applied = meshctl("apply", "-f", str(extra), "--state-dir", str(state))
    assert applied.returncode == 0, applied.stderr

    def workers() -> list[dict[str, Any]]:
        return [p for p in status(state)["pods"] if p["deployment"] == "worker"]

    wait_until(lambda: len(workers()) == 2 and all(p["ready"] for p in workers()), 30, "worker pods ready")
    pids = [p["pid"] for p in workers()]
    assert all(alive(pid) for pid in pids)

    deleted = meshctl("delete", "-f", str(extra), "--state-dir", str(state))
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: not workers(), 30, "worker pods to go")
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "worker processes to exit")


OUTSIDE = EXTRA.replace("name: worker, namespace: prod", "name: legacy, namespace: default")


@pytest.mark.slow
def test_a_pod_outside_the_ambient_mesh_is_ready_without_a_mesh_listener(
    mesh: tuple[Component, Path], tmp_path: Path
) -> None:
    _, state = mesh
    manifest = tmp_path / "legacy.yaml"
    manifest.write_text(OUTSIDE)
    assert meshctl("apply", "-f", str(manifest), "--state-dir", str(state)).returncode == 0

    def legacy() -> list[dict[str, Any]]:
        return [p for p in status(state)["pods"] if p["deployment"] == "legacy"]

    wait_until(lambda: len(legacy()) == 2 and all(p["ready"] for p in legacy()), 30, "legacy pods ready")
    assert [p["captured"] for p in legacy()] == [False, False]
    assert all(p["captured"] for p in status(state)["pods"] if p["namespace"] == "prod")


WAYPOINT = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"""


@pytest.mark.slow
def test_applied_waypoint_gateway_starts_a_waypoint_and_delete_stops_it(
    mesh: tuple[Component, Path], tmp_path: Path
) -> None:
    _, state = mesh
    gateway = tmp_path / "waypoint.yaml"
    gateway.write_text(WAYPOINT)
    assert meshctl("apply", "-f", str(gateway), "--state-dir", str(state)).returncode == 0

    def waypoints() -> list[dict[str, Any]]:
        return [p for p in status(state)["proxies"] if p["kind"] == "waypoint"]

    wait_until(lambda: len(waypoints()) == 1 and waypoints()[0]["ready"], 30, "the waypoint to be ready", state)
    waypoint = waypoints()[0]
    assert waypoint["name"] == "waypoint-prod-waypoint"
    assert waypoint["metrics"].startswith("http://127.") and waypoint["metrics"].endswith("/metrics")
    pid = waypoint["pid"]

    assert meshctl("delete", "-f", str(gateway), "--state-dir", str(state)).returncode == 0
    wait_until(lambda: not waypoints(), 30, "the waypoint to go", state)
    wait_until(lambda: not alive(pid), 10, "the waypoint process to exit")


@pytest.mark.slow
def test_sigterm_drains_everything(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    document = status(state)
    pids = [p["pid"] for p in document["pods"]] + [p["pid"] for p in document["proxies"]]
    assert len(pids) == 6 and all(isinstance(pid, int) and alive(pid) for pid in pids)

    up.signal(signal.SIGTERM)
    assert up.proc.wait(timeout=30) == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert not (state / "status.json").exists()
    assert not (state / "pods.json").exists()
    assert not (state / "istiod.json").exists()
    gone = meshctl("status", "--state-dir", str(state))
    assert gone.returncode == 1
    assert "no mesh is running" in gone.stderr


def test_up_refuses_invalid_manifests_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(APP.replace("replicas: 2", "replicas: two"))
    result = meshctl("up", "-f", str(bad), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 1
    assert "replicas" in result.stderr
    assert "bad.yaml" in result.stderr


def mesh_pids(state: Path) -> list[int]:
    document = status(state)
    return [p["pid"] for p in (*document["pods"], *document["proxies"]) if isinstance(p.get("pid"), int)]


def watchdog_pid(state: Path) -> int:
    wanted = ["-m", "meshctl.runner.leftovers", "--state-dir", str(state)]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if argv[1:5] == wanted:
                return int(entry.name)
    raise AssertionError("no watchdog process for this mesh")


@pytest.mark.slow
def test_a_sigkilled_runner_leaves_no_process_behind(mesh: tuple[Component, Path]) -> None:
    up, state = mesh
    pids = mesh_pids(state)
    assert len(pids) == 6
    up.proc.kill()
    up.proc.wait(timeout=10)
    wait_until(lambda: all(exited(pid) for pid in pids), 20, "the watchdog to stop the orphans")


@pytest.mark.slow
def test_the_next_up_stops_what_an_earlier_runner_left(spawn: Spawner, tmp_path: Path) -> None:
    manifests = tmp_path / "app.yaml"
    manifests.write_text(APP)
    state = tmp_path / "state"
    argv = [MESHCTL, "up", "-f", str(manifests), "--capture", "proxy",
                                       "--state-dir", str(state)]
    first = spawn.start("meshctl-up-1", argv, wait_ready=False)
    first.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=90)
    pids = mesh_pids(state)
    os.kill(watchdog_pid(state), signal.SIGKILL)  # both the runner and its watchdog die without a word
    first.proc.kill()
    first.proc.wait(timeout=10)
    assert all(not exited(pid) for pid in pids)  # orphans: nothing stopped them this time

    second = spawn.start("meshctl-up-2", argv, wait_ready=False)
    second.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=90)
    assert all(exited(pid) for pid in pids)
    assert f"stopped {len(pids)} process(es) an earlier runner of" in "\n".join(second.stdout_lines)
    second.signal(signal.SIGTERM)
    assert second.proc.wait(timeout=60) == 0
