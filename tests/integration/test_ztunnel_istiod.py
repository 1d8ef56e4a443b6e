"""ztunnel following a real istiod_lite process (``--istiod``): state from pushes, certificates from
its CA for exactly the identities of the node's workloads, and changes followed as they are pushed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from meshcore.admin.client import http_request
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import free_block, split


def deployment(name: str, namespace: str, node: str, service_account: str) -> str:
    return f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeName: {node}
      serviceAccountName: {service_account}
      containers:
      - name: app
        image: ignored
        command: ["python3", "-m", "http.server"]
"""


# Workloads join the ambient mesh (HBONE) through their namespace's label, as in Istio.
AMBIENT_NAMESPACE = """apiVersion: v1
kind: Namespace
metadata:
  name: prod
  labels: {istio.io/dataplane-mode: ambient}
"""

SERVICE = """apiVersion: v1
kind: Service
metadata: {name: web, namespace: prod}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


async def config_dump(component: Component) -> dict[str, Any]:
    host, port = split(component.addresses["admin"])
    dump: dict[str, Any] = (await http_request(host, port, "GET", "/config_dump")).json()
    return dump


async def test_state_and_certificates_come_from_istiod(spawn: Spawner, tmp_path: Path) -> None:
    config_dir, state_dir = tmp_path / "config", tmp_path / "state"
    config_dir.mkdir()
    (config_dir / "namespace.yaml").write_text(AMBIENT_NAMESPACE)
    (config_dir / "web.yaml").write_text(deployment("web", "prod", "node-a", "web") + "---\n" + SERVICE)
    (config_dir / "other.yaml").write_text(deployment("batch", "jobs", "node-b", "batch"))
    istiod = spawn.python_module(
        "istiod", "istiod_lite", "--state-dir", str(state_dir), "--config-dir", str(config_dir),
        "--control-port", "0", "--admin-port", "0", "--nodes", "node-a,node-b", "--poll-interval", "0.1")
    control = istiod.addresses["control"]
    block = free_block()
    ztunnel = spawn.python_module(
        "ztunnel-a", "ztunnel", "--node", "node-a", "--node-address", f"127.{block}.0.1",
        "--istiod", f"wss://{control}/v1/xds", "--token-file", str(state_dir / "tokens" / "node-a.token"),
        "--root-cert", str(state_dir / "root-cert.pem"),
        "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0")

    dump = await config_dump(ztunnel)
    assert {(w["namespace"], w["node"]) for w in dump["workloads"]} == {("prod", "node-a"), ("jobs", "node-b")}
    assert [s["hostname"] for s in dump["services"]] == ["web.prod.svc.cluster.local"]
    assert set(dump["synced"]) == {"workload", "service", "authorization"}
    certificates = {c["identity"]: c for c in dump["certificates"]}
    # Node authorization: only node-a's identity, signed by istiod_lite's CA.
    assert list(certificates) == ["spiffe://cluster.local/ns/prod/sa/web"]
    assert certificates["spiffe://cluster.local/ns/prod/sa/web"]["state"] == "Available"
    ready_host, ready_port = split(ztunnel.addresses["ready"])
    assert (await http_request(ready_host, ready_port, "GET", "/healthz/ready")).status == 200

    # A new workload on this node is pushed; ztunnel fetches its identity's certificate.
    (config_dir / "api.yaml").write_text(deployment("api", "prod", "node-a", "api"))
    with trio.fail_after(20):
        for _ in range(200):
            dump = await config_dump(ztunnel)
            states = {c["identity"]: c["state"] for c in dump["certificates"]}
            if states.get("spiffe://cluster.local/ns/prod/sa/api") == "Available":
                break
            await trio.sleep(0.1)
    assert {w["name"].split("-")[0] for w in dump["workloads"] if w["node"] == "node-a"} == {"web", "api"}
    assert json.dumps(states, sort_keys=True) == json.dumps({
        "spiffe://cluster.local/ns/prod/sa/api": "Available",
        "spiffe://cluster.local/ns/prod/sa/web": "Available",
    }, sort_keys=True)
