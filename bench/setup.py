"""Everything the benchmark runs against, started once and left idle between measurements.

* a local mesh, started with ``meshctl up`` exactly as a user would (proxy mode, two nodes): a client
  pod on node-1; nginx pods on node-2 behind Service ``web.bench`` (no waypoint) and behind Service
  ``shop.canary`` (v1 and v2, namespace with a waypoint, VirtualService 95/5);
* optionally a second mesh whose ztunnels run ``--workers 2`` (the multi-core figure);
* the Envoy counterparts, one process each with ``--concurrency 1`` like each of our proxies: an HBONE
  client → HBONE terminator pair in front of the same ``web`` nginx, certificates from the mesh's own CA,
  and an L7 router splitting 95/5 over the same v1/v2 nginx pods.

nginx (Debian's ``nginx-light``) answers ``/`` with 1 KiB and ``/bulk`` with a large file by sendfile,
so the backend is never the bottleneck. Every process is ours and is stopped at the end.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric import ec

from bench.envoy import envoy_client_config, envoy_terminator_config, l7_router_config
from istiod_lite.ca import CertificateAuthority
from meshcore.identity.certs import certificates_pem, private_key_pem
from meshcore.identity.spiffe import Identity
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir

MESHCTL = str(Path(sys.executable).with_name("meshctl"))
ENVOY = shutil.which("envoy") or str(Path(sys.executable).with_name("envoy"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BODY = "x" * 1024
WEB_HOST = "web.bench.svc.cluster.local:8080"
SHOP_HOST = "shop.canary.svc.cluster.local:8080"

NGINX_TEMPLATE = """\
user root;
worker_processes 1;
daemon off;
pid {scratch}/nginx-@POD_IP@.pid;
error_log stderr warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
http {{
  access_log off;
  client_body_temp_path {scratch}/tmp-@POD_IP@-body;
  proxy_temp_path {scratch}/tmp-@POD_IP@-proxy;
  fastcgi_temp_path {scratch}/tmp-@POD_IP@-fastcgi;
  uwsgi_temp_path {scratch}/tmp-@POD_IP@-uwsgi;
  scgi_temp_path {scratch}/tmp-@POD_IP@-scgi;
  keepalive_timeout 600s;
  keepalive_requests 10000000;
  sendfile on;
  tcp_nodelay on;
  server {{
    listen @POD_IP@:8080 backlog=8192;
    location = / {{ default_type text/plain; return 200 "{body}"; }}
    location = /bulk {{ default_type application/octet-stream; alias {scratch}/bulk.bin; }}
  }}
}}
"""


def _deployment(namespace: str, name: str, node: str, command: list[str], labels: dict[str, str],
                service_account: str, port: int | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "command": command}
    if port is not None:  # the runner's readiness probe connects to it
        container["ports"] = [{"containerPort": port}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"serviceAccountName": service_account, "nodeName": node,
                     "containers": [container]}}},
    }


def manifests(scratch: Path) -> list[dict[str, Any]]:
    """The bench mesh: what `meshctl up -f` gets."""
    nginx = ["sh", "-c", f'sed "s/@POD_IP@/$POD_IP/g" {scratch}/nginx.conf.in > {scratch}/nginx-$POD_IP.conf'
             f' && exec {NGINX} -c {scratch}/nginx-$POD_IP.conf -e stderr']
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "bench", "labels": {"istio.io/dataplane-mode": "ambient"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "canary", "labels": {
            "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "waypoint", "namespace": "canary", "labels": {"istio.io/waypoint-for": "service"}},
         "spec": {"gatewayClassName": "istio-waypoint",
                  "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}},
    ]
    for namespace, account in (("bench", "client"), ("bench", "web"), ("canary", "shop")):
        docs.append({"apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": {"name": account, "namespace": namespace}})
    for namespace, name, app in (("bench", "web", "web"), ("canary", "shop", "shop")):
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                     "spec": {"selector": {"app": app}, "ports": [
                         {"name": "http", "port": 8080, "targetPort": 8080, "appProtocol": "http"}]}})
    docs.append(_deployment("bench", "client", "node-1", ["sleep", "86400"], {"app": "client"}, "client"))
    docs.append(_deployment("bench", "web", "node-2", nginx, {"app": "web"}, "web", 8080))
    for version in ("v1", "v2"):
        docs.append(_deployment("canary", f"shop-{version}", "node-2", nginx,
                                {"app": "shop", "version": version}, "shop", 8080))
    docs.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                 "metadata": {"name": "shop", "namespace": "canary"},
                 "spec": {"host": "shop", "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]}})
    docs.append({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                 "metadata": {"name": "shop", "namespace": "canary"},
                 "spec": {"hosts": ["shop"], "http": [{"route": [
                     {"destination": {"host": "shop", "subset": "v1"}, "weight": 95},
                     {"destination": {"host": "shop", "subset": "v2"}, "weight": 5}]}]}})
    return docs


@attrs.frozen
class Mesh:
    """A running `meshctl up` and what the bench needs from its status."""

    process: subprocess.Popen[str]
    state_dir: Path
    pods: dict[str, dict[str, Any]]  # deployment name → pod row
    proxies: dict[str, dict[str, Any]]  # proxy name → row

    def pod_ip(self, deployment: str) -> str:
        return str(self.pods[deployment]["ip"])

    def proxy_pids(self, *kinds: str) -> list[int]:
        return [int(p["pid"]) for p in self.proxies.values() if p["kind"] in kinds and p.get("pid")]


def write_backend_files(scratch: Path, bulk_mib: int) -> None:
    (scratch / "nginx.conf.in").write_text(NGINX_TEMPLATE.format(scratch=scratch, body=BODY))
    with (scratch / "bulk.bin").open("wb") as bulk:  # sparse: nginx sends zeros at page-cache speed
        bulk.truncate(bulk_mib * 1024 * 1024)


def start_mesh(scratch: Path, name: str, *extra: str, timeout: float = 180.0) -> Mesh:
    """``meshctl up`` on the bench manifests; returns once it says the mesh is up."""
    path = scratch / "mesh.yaml"
    path.write_text("---\n".join(json.dumps(doc) + "\n" for doc in manifests(scratch)))
    state = scratch / f"state-{name}"
    log = (scratch / f"meshctl-up-{name}.log").open("w")
    argv = [MESHCTL, "up", "-f", str(path), "--capture", "proxy", "--state-dir", str(state), *extra]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    log.close()
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.startswith("mesh is up"):
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError(f"meshctl up ({name}) exited; see {scratch}/meshctl-up-{name}.log")
    if time.monotonic() > deadline:
        stop(process)
        raise RuntimeError(f"meshctl up ({name}) not up after {timeout:.0f}s")
    status = json.loads(subprocess.run([MESHCTL, "status", "-o", "json", "--state-dir", str(state)],
                                       capture_output=True, text=True, check=True, timeout=30).stdout)
    return Mesh(process, state, {p["deployment"]: p for p in status["pods"]},
                {p["name"]: p for p in status["proxies"]})


def stop(process: subprocess.Popen[str], grace: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def free_loopback_block() -> int:
    """A second octet B such that nothing listens on 127.B.0.1 (Envoy's addresses)."""
    for _ in range(50):
        block = random.randrange(64, 250)
        with socket.socket() as probe:
            try:
                probe.bind((f"127.{block}.0.1", 10000))
            except OSError:
                continue
        return block
    raise RuntimeError("no free 127.B block for Envoy")


def issue_cert_dir(ca_dir: Path, identities: list[Identity], out: Path) -> None:
    """Certificates from the mesh's CA in ``ztunnel.cert_dir``'s layout (what Envoy's config reads)."""
    ca = CertificateAuthority.load_or_create(ca_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ROOT_FILE).write_bytes(ca.trust_bundle_pem())
    for identity in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        where = identity_dir(out, identity)
        where.mkdir(parents=True, exist_ok=True)
        (where / CHAIN_FILE).write_bytes(certificates_pem(ca.issue_workload(key.public_key(), identity).chain))
        (where / KEY_FILE).write_bytes(private_key_pem(key))


@attrs.frozen
class Envoys:
    hbone_entry: tuple[str, int]
    router_entry: tuple[str, int]
    hbone_pids: tuple[int, ...]
    router_pids: tuple[int, ...]
    processes: tuple[subprocess.Popen[bytes], ...]


def _wait_listening(address: tuple[str, int], process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"envoy exited with {process.returncode} before listening on {address}")
        with contextlib.suppress(OSError), socket.create_connection(address, timeout=1):
            return
        time.sleep(0.1)
    raise RuntimeError(f"envoy not listening on {address} after {timeout:.0f}s")


def start_envoys(scratch: Path, mesh: Mesh) -> Envoys:
    block = free_loopback_block()
    certs = scratch / "envoy-certs"
    client, server = Identity("cluster.local", "bench", "client"), Identity("cluster.local", "bench", "web")
    issue_cert_dir(mesh.state_dir, [client, server], certs)
    web = (mesh.pod_ip("web"), 8080)
    entry, terminator, router = (f"127.{block}.0.1", 10000), (f"127.{block}.0.2", 15008), (f"127.{block}.0.3", 10001)
    configs = {
        "envoy-hbone-client": envoy_client_config(certs, client, entry, terminator, f"{web[0]}:{web[1]}",
                                                  server.uri, entry[0]),
        "envoy-hbone-terminator": envoy_terminator_config(certs, server, terminator, web, terminator[0]),
        "envoy-router": l7_router_config(router, [("v1", (mesh.pod_ip("shop-v1"), 8080), 95),
                                                  ("v2", (mesh.pod_ip("shop-v2"), 8080), 5)], router[0]),
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    for name, config in configs.items():
        path = scratch / f"{name}.json"
        path.write_text(json.dumps(config))
        log = (scratch / f"{name}.log").open("w")
        processes[name] = subprocess.Popen(
            [ENVOY, "-c", str(path), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warning",
             "--base-id", str(random.randrange(1, 1 << 30))],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
    _wait_listening(entry, processes["envoy-hbone-client"])
    _wait_listening(terminator, processes["envoy-hbone-terminator"])
    _wait_listening(router, processes["envoy-router"])
    return Envoys(
        hbone_entry=entry, router_entry=router,
        hbone_pids=(processes["envoy-hbone-client"].pid, processes["envoy-hbone-terminator"].pid),
        router_pids=(processes["envoy-router"].pid,),
        processes=tuple(processes.values()),
    )


def stop_envoys(envoys: Envoys) -> None:
    for process in envoys.processes:
        if process.poll() is None:
            process.terminate()
    for process in envoys.processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def stopping(mesh: Mesh) -> Iterator[Mesh]:
    try:
        yield mesh
    finally:
        stop(mesh.process)
