"""`meshctl authz check` against a live `meshctl up` mesh: its answer must be what the data plane does.

One mesh, eleven questions. For each, the test asks `meshctl authz check` (a subprocess, as a user
would) and then really makes the call from a pod of that identity with `meshctl exec … curl`. A
refusal is ``403`` either way — the waypoint's ``RBAC: access denied``, or (L4) the pod's explicit proxy
reporting that the destination ztunnel refused the tunnel — or no HTTP answer at all; any other status
came from the app. Both answers must agree in every case, and the policy the check names must be the
one that decided.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from tests.support.processes import Spawner

MESHCTL = str(Path(sys.executable).with_name("meshctl"))
PYTHON = sys.executable


def _sleeper(namespace: str, name: str) -> str:
    return f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {namespace}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: {name}
        command: [sleep, "3600"]
"""


def _server(namespace: str, name: str, port: int) -> str:
    return f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {namespace}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: {port}, targetPort: {port}, appProtocol: http}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: {name}
        command: [{PYTHON}, -m, http.server, "{port}"]
"""


MESH = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: data
  labels: {{istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: guest
  labels: {{istio.io/dataplane-mode: ambient}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: shop
  labels: {{istio.io/waypoint-for: service}}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {{name: mesh, port: 15008, protocol: HBONE}}
---
{_server("shop", "api", 8080)}---
{_server("data", "db", 9000)}---
{_sleeper("shop", "frontend")}---
{_sleeper("shop", "batch")}---
{_sleeper("guest", "visitor")}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: db-allow-frontend, namespace: data}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/frontend]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: db-deny-guests, namespace: data}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  action: DENY
  rules:
  - from: [{{source: {{namespaces: [guest]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: api-read, namespace: shop}}
spec:
  targetRefs: [{{kind: Service, group: "", name: api}}]
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/shop/sa/frontend]}}}}]
    to: [{{operation: {{methods: [GET, POST]}}}}]
  - from: [{{source: {{namespaces: [guest]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/public/*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: shop}}
spec:
  targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}}]
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin/*"]}}}}]
"""

API = "api.shop.svc.cluster.local"
DB = "db.data.svc.cluster.local"


@attrs.frozen
class Case:
    namespace: str
    deployment: str
    host: str
    port: int
    method: str
    path: str
    allowed: bool
    policy: str | None

    @property
    def identity(self) -> str:
        return f"{self.namespace}/{self.deployment}"


CASES = [
    Case("shop", "frontend", DB, 9000, "GET", "/", True, "data/db-allow-frontend"),
    Case("shop", "batch", DB, 9000, "GET", "/", False, None),
    Case("guest", "visitor", DB, 9000, "GET", "/", False, "data/db-deny-guests"),
    Case("shop", "frontend", API, 8080, "GET", "/public/a", True, "shop/api-read"),
    Case("shop", "frontend", API, 8080, "POST", "/orders", True, "shop/api-read"),
    Case("shop", "frontend", API, 8080, "DELETE", "/orders", False, None),
    Case("shop", "frontend", API, 8080, "GET", "/admin/users", False, "shop/no-admin"),
    Case("guest", "visitor", API, 8080, "GET", "/public/a", True, "shop/api-read"),
    Case("guest", "visitor", API, 8080, "POST", "/public/a", False, None),
    Case("guest", "visitor", API, 8080, "GET", "/private", False, None),
    Case("shop", "batch", API, 8080, "GET", "/public/a", False, None),
]


def meshctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHCTL, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp_path = tmp_path_factory.mktemp("authz")
    manifests = tmp_path / "mesh.yaml"
    manifests.write_text(MESH)
    state = tmp_path / "state"
    spawn = Spawner(tmp_path)
    try:
        argv = [MESHCTL, "up", "-f", str(manifests), "--capture", "proxy", "--state-dir", str(state)]
        up = spawn.start("meshctl-up", argv, wait_ready=False)
        up.wait_for_line(lambda line: line.startswith("mesh is up"), timeout=120)
        yield state
        up.signal(signal.SIGTERM)
        up.proc.wait(timeout=60)
    finally:
        spawn.close()


def data_plane_allows(state: Path, case: Case) -> tuple[bool, str]:
    """Make the call from a pod of the case's identity; (reached the app?, what curl saw)."""
    url = f"http://{case.host}:{case.port}{case.path}"
    result = meshctl("exec", "-n", case.namespace, case.deployment, "--state-dir", str(state), "--",
                     "curl", "-s", "-o", "/dev/null", "-m", "10", "-w", "%{http_code}", "-X", case.method, url)
    status = result.stdout.strip()
    # 403: refused by the waypoint or by the destination ztunnel (via the explicit proxy); 000: no answer
    return status not in ("000", "403", ""), f"curl exit {result.returncode}, HTTP {status or '-'}"


def checked(state: Path, case: Case) -> dict[str, object]:
    result = meshctl("authz", "check", "--from", case.identity, "--to", case.host, "--port", str(case.port),
                     "--method", case.method, "--path", case.path, "-n", case.namespace, "-o", "json",
                     "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout)
    return report


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.identity}-{c.method}-{c.host.split('.')[0]}{c.path}")
def test_authz_check_agrees_with_the_data_plane(mesh: Path, case: Case) -> None:
    report = checked(mesh, case)
    reached, seen = data_plane_allows(mesh, case)
    assert report["allowed"] is reached, f"check said {report['allowed']}, data plane: {seen}; report: {report}"
    assert reached is case.allowed, seen
    steps = report["steps"]
    assert isinstance(steps, list)
    deciding = [s for s in steps if s["where"] == "waypoint"] if case.host == API else steps
    assert deciding and deciding[0]["policy"] == case.policy, steps
    if case.host == API:  # behind the waypoint, the destination ztunnel sees the waypoint's identity
        assert all(s["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/waypoint"
                   for s in steps if s["where"] == "ztunnel"), steps


def test_authz_check_table_names_the_deciding_policy(mesh: Path) -> None:
    result = meshctl("authz", "check", "--from", "guest/visitor", "--to", "db.data", "--port", "9000",
                     "-n", "guest", "--state-dir", str(mesh))
    assert result.returncode == 0, result.stderr
    assert "data/db-deny-guests" in result.stdout and "a DENY policy matched" in result.stdout
    assert result.stdout.rstrip().endswith("result: DENY")


def test_authz_check_explains_an_unknown_service_and_port(mesh: Path) -> None:
    unknown = meshctl("authz", "check", "--from", "shop/frontend", "--to", "nope", "--port", "80", "-n", "shop",
                      "--state-dir", str(mesh))
    assert unknown.returncode == 1 and "no service 'nope' seen from namespace shop" in unknown.stderr
    bad_port = meshctl("authz", "check", "--from", "shop/frontend", "--to", "api", "--port", "81", "-n", "shop",
                       "--state-dir", str(mesh))
    assert bad_port.returncode == 1 and "has no port 81" in bad_port.stderr and "its ports: 8080" in bad_port.stderr
    bad_from = meshctl("authz", "check", "--from", "frontend", "--to", "api", "--port", "8080",
                       "--state-dir", str(mesh))
    assert bad_from.returncode == 2 and "is not an identity" in bad_from.stderr
