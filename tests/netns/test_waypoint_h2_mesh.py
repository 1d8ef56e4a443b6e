"""HTTP/2 through the whole mesh: client pod → ztunnel → waypoint → ztunnel → server pod (netns mode).

The clients are independent implementations run inside a captured pod with `meshctl exec`: a grpcio
client (unary, server streaming, an error status carried in the trailers) and nghttp2's h2load over
h2c. Neither knows about the mesh. The VirtualService adds a response header, so a reply that carries
it went through the waypoint; the waypoint forwards HTTP/2 upstream (the downstream's protocol).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Spawner

pytestmark = [pytest.mark.netns, pytest.mark.interop]

grpc = pytest.importorskip("grpc")

MESHCTL = str(Path(sys.executable).with_name("meshctl"))
SUPPORT = Path(__file__).resolve().parents[1] / "support"
PY = sys.executable

MANIFESTS = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: rpc
  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: rpc
  labels: {{istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: rpc}}
spec:
  selector: {{app: echo}}
  ports: [{{name: grpc, port: 50051, targetPort: 50051, appProtocol: grpc}}]
---
apiVersion: v1
kind: Service
metadata: {{name: hello, namespace: rpc}}
spec:
  selector: {{app: hello}}
  ports: [{{name: http2, port: 8080, targetPort: 8080, appProtocol: http2}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: rpc}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      nodeName: node-2
      containers:
      - name: echo
        command: [{PY}, {SUPPORT / "grpc_echo.py"}, serve, $(POD_IP), "50051"]
        ports: [{{containerPort: 50051}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: hello, namespace: rpc}}
spec:
  selector: {{matchLabels: {{app: hello}}}}
  template:
    metadata: {{labels: {{app: hello}}}}
    spec:
      nodeName: node-2
      containers:
      - name: hello
        command: [{PY}, {SUPPORT / "h2c_hello.py"}, $(POD_IP), "8080"]
        ports: [{{containerPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: client, namespace: rpc}}
spec:
  selector: {{matchLabels: {{app: client}}}}
  template:
    metadata: {{labels: {{app: client}}}}
    spec:
      nodeName: node-1
      containers:
      - name: client
        command: [sleep, "3600"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: rpc}}
spec:
  hosts: [echo]
  http:
  - headers: {{response: {{set: {{x-via-waypoint: "rpc/waypoint"}}}}}}
    route: [{{destination: {{host: echo}}}}]
"""

REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout")


def meshctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("h2mesh")
    (tmp / "mesh.yaml").write_text(MANIFESTS)
    spawn = Spawner(tmp)
    try:
        up = spawn.start("meshctl-up", [MESHCTL, "up", "-f", str(tmp / "mesh.yaml"), "--capture", "netns",
                                        "--state-dir", str(tmp / "state")], wait_ready=False)
        up.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=120)
        yield tmp / "state"
        up.signal(signal.SIGTERM)
        up.proc.wait(timeout=60)
    finally:
        spawn.close()


def test_grpc_unary_streaming_and_status_through_the_waypoint(state: Path) -> None:
    result = meshctl("exec", "-n", "rpc", "client", "--state-dir", str(state), "--",
                     PY, str(SUPPORT / "grpc_echo.py"), "call", "echo.rpc.svc.cluster.local:50051")
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout)
    assert seen["unary"] == "echo:hello"
    assert seen["trailing_metadata"]["x-served-by"] == "grpcio"  # trailers crossed both hops
    assert seen["initial_metadata"]["x-via-waypoint"] == "rpc/waypoint"  # the waypoint routed it
    assert seen["stream"] == [f"item-{i}" for i in range(5)]
    assert seen["not_found"] == "NOT_FOUND" and seen["not_found_details"] == "no such thing: x"


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed (Debian nghttp2-client)")
def test_h2load_over_h2c_through_the_waypoint_completes_without_errors(state: Path) -> None:
    result = meshctl("exec", "-n", "rpc", "client", "--state-dir", str(state), "--",
                     "h2load", "-n", "2000", "-c", "10", "-m", "10", "http://hello.rpc.svc.cluster.local:8080/")
    found = REQUESTS.search(result.stdout)
    assert found is not None, result.stdout + result.stderr
    total, done, succeeded, failed, errored, timeout = map(int, found.groups())
    assert (total, done, succeeded) == (2000, 2000, 2000)
    assert (failed, errored, timeout) == (0, 0, 0)
    assert "2000 2xx" in result.stdout
