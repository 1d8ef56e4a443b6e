"""The mesh in netns mode, end to end: unmodified programs in pod namespaces, two real ztunnels.

Pods are network namespaces on the fabric's bridge (198.18.0.0/16). Each node has a ztunnel process
started with ``--capture netns`` and a node agent (in this test process) that installs the in-pod rules
and hands the pod's namespace to its node's ztunnel over ZDS. The apps know nothing of the mesh: ``curl``
resolves the service name through the pod's resolv.conf (answered by ztunnel's in-pod DNS proxy) and
connects to it; ``python3 -m http.server`` answers and logs who called.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import yaml

from meshcore.admin.client import http_request
from meshcore.identity.spiffe import Identity
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import split, write_cert_dir
from ztunnel.capture.agent import CapturedPod, NodeAgent
from ztunnel.capture.fabric import Fabric, PodNetwork
from ztunnel.capture.witness import install_witness, read_witness

pytestmark = pytest.mark.netns

VIP = "198.18.250.10"
HOST = "web.server.svc.cluster.local"
STRICT = {"name": "strict", "namespace": "server", "scope": "Namespace", "action": "Deny",
          "rules": [[[{"notPrincipals": [{"Presence": []}]}]]]}


@attrs.frozen
class PodSpec:
    name: str
    namespace: str
    service_account: str
    node: str
    enrolled: bool = True


PODS = (
    PodSpec("client", "client", "client", "node-a"),
    PodSpec("web", "server", "web", "node-b"),
    PodSpec("outsider", "outside", "default", "node-a", enrolled=False),
)


def workload(spec: PodSpec, pod: PodNetwork) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "uid": f"Kubernetes//Pod/{spec.namespace}/{spec.name}", "name": spec.name, "namespace": spec.namespace,
        "serviceAccount": spec.service_account, "workloadIps": [pod.ip], "protocol": "HBONE", "node": spec.node,
    }
    if spec.name == "web":
        doc["services"] = {f"server/{HOST}": {8080: 8080}}
    return doc


@attrs.define
class InPodMesh:
    fabric: Fabric
    spawn: Spawner
    tmp: Path
    pods: dict[str, PodNetwork]
    agents: dict[str, NodeAgent]
    ztunnels: dict[str, Component] = attrs.field(factory=dict)

    def write_config(self, policies: list[dict[str, Any]]) -> Path:
        path = self.tmp / "mesh.yaml"
        document = {
            "workloads": [workload(spec, self.pods[spec.name]) for spec in PODS if spec.enrolled],
            "services": [{"name": "web", "namespace": "server", "hostname": HOST, "vips": [f"/{VIP}"],
                          "ports": {8080: 8080}}],
            "policies": policies,
        }
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def start_ztunnel(self, node: str, index: int) -> Component:
        component = self.spawn.python_module(
            f"ztunnel-{node}", "ztunnel", "--node", node, "--node-address", f"127.{index}.0.1",
            "--local-config", str(self.tmp / "mesh.yaml"), "--cert-dir", str(self.tmp / "certs"),
            "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0",
            "--capture", "netns", "--zds-socket", str(self.tmp / f"{node}.sock"), "--drain-seconds", "1",
        )
        self.ztunnels[node] = component
        return component

    async def wait_serving(self, node: str, count: int) -> None:
        """Until the node's ztunnel is ready (snapshot received) and serves ``count`` pods."""
        admin = split(self.ztunnels[node].addresses["admin"])
        ready = split(self.ztunnels[node].addresses["ready"])
        seen = ""
        for _ in range(200):
            answer = await http_request(*ready, "GET", "/healthz/ready")
            dump = (await http_request(*admin, "GET", "/config_dump")).json()
            seen = f"{answer.status} {answer.text().strip()}; captured {dump.get('captured_pods')}"
            if answer.status == 200 and len(dump.get("captured_pods", {})) == count:
                return
            await trio.sleep(0.1)
        raise AssertionError(f"{node}'s ztunnel never served {count} pod(s): {seen}")


def run_in_pod(pod: PodNetwork, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", pod.netns, *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture
async def mesh(fabric: Fabric, spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[InPodMesh]:
    pods = {spec.name: await fabric.create_pod(spec.name) for spec in PODS}
    for spec in PODS:
        await fabric.write_resolv_conf(spec.name, search=[f"{spec.namespace}.svc.cluster.local",
                                                          "svc.cluster.local", "cluster.local"])
    identities = [Identity("cluster.local", s.namespace, s.service_account) for s in PODS if s.enrolled]
    write_cert_dir(tmp_path / "certs", identities, tmp_path / "ca")
    agents = {node: NodeAgent(tmp_path / f"{node}.sock") for node in ("node-a", "node-b")}
    built = InPodMesh(fabric, spawn, tmp_path, pods, agents)
    built.write_config([])
    for index, node in enumerate(("node-a", "node-b"), start=1):
        built.start_ztunnel(node, 200 + index)
    for spec in PODS:
        if spec.enrolled:
            pod = pods[spec.name]
            await agents[spec.node].add_pod(CapturedPod(
                uid=f"uid-{spec.name}", name=spec.name, namespace=spec.namespace, netns=pod.netns, ip=pod.ip,
                service_account=spec.service_account))
    for agent in agents.values():
        await nursery.start(agent.run)
    await built.wait_serving("node-a", 1)
    await built.wait_serving("node-b", 1)
    for name in ("client", "web"):
        await install_witness(pods[name].netns)
    server = spawn.start("http-server", ["ip", "netns", "exec", pods["web"].netns, "python3", "-m", "http.server",
                                         "8080"], wait_ready=False)
    for _ in range(200):
        if "Serving HTTP" in server.stderr_tail() or server.proc.poll() is not None:
            break
        await trio.sleep(0.05)
    yield built
    for node, agent in agents.items():  # the pods leave the mesh: rules out, ztunnel told
        for uid in list(agent.pods):
            await agent.remove_pod(uid)
        del node


def curl(pod: PodNetwork, url: str) -> subprocess.CompletedProcess[str]:
    return run_in_pod(pod, "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url)


async def test_unmodified_curl_reaches_the_service_and_only_hbone_crosses(mesh: InPodMesh, spawn: Spawner) -> None:
    client, web = mesh.pods["client"], mesh.pods["web"]
    result = await trio.to_thread.run_sync(curl, client, f"http://{HOST}:8080/")
    assert result.stdout == "200", (result.stdout, result.stderr)
    short = await trio.to_thread.run_sync(curl, client, "http://web.server:8080/")  # search domains
    assert short.stdout == "200"
    server_log = spawn.components[-1].stderr_tail(20)
    assert f"{client.ip} - -" in server_log  # the app logged the client pod's real address
    for pod in (client, web):
        counts = await read_witness(pod.netns)
        assert counts.packets("hbone") > 0, (pod.name, counts)
        assert counts.packets("other_tcp") == 0, (pod.name, counts)  # no plaintext between the pods
    dump = (await http_request(*split(mesh.ztunnels["node-b"].addresses["admin"]), "GET", "/config_dump")).json()
    assert dump["captured_pods"] == {"uid-web": "Kubernetes//Pod/server/web"}


async def test_a_pod_outside_the_mesh_is_refused_under_strict_and_admitted_under_permissive(
    mesh: InPodMesh,
) -> None:
    outsider, web = mesh.pods["outsider"], mesh.pods["web"]
    url = f"http://{web.ip}:8080/"
    permissive = await trio.to_thread.run_sync(curl, outsider, url)
    assert permissive.stdout == "200"  # no PeerAuthentication: PERMISSIVE, plaintext admitted on 15006
    mesh.write_config([STRICT])
    for _ in range(30):  # until the destination's ztunnel reloaded the file
        if (await trio.to_thread.run_sync(curl, outsider, url)).stdout != "200":
            break
        await trio.sleep(0.3)
    refused = await trio.to_thread.run_sync(curl, outsider, url)
    assert refused.stdout == "000"  # reset by the destination's ztunnel: no HTTP answer at all
    meshed = await trio.to_thread.run_sync(curl, mesh.pods["client"], f"http://{HOST}:8080/")
    assert meshed.stdout == "200"  # a mesh client carries an identity, so STRICT admits it


async def test_a_killed_ztunnel_serves_new_connections_soon_after_it_is_back(mesh: InPodMesh) -> None:
    client = mesh.pods["client"]
    mesh.ztunnels["node-a"].proc.send_signal(signal.SIGKILL)
    mesh.ztunnels["node-a"].proc.wait(10)
    mesh.start_ztunnel("node-a", 201)
    await mesh.agents["node-a"].wait_connected()  # the agent reconnects and replays its snapshot
    await mesh.wait_serving("node-a", 1)
    ready_at = trio.current_time()
    for _ in range(100):
        if (await trio.to_thread.run_sync(curl, client, f"http://{HOST}:8080/")).stdout == "200":
            break
        await trio.sleep(0.1)
    assert trio.current_time() - ready_at < 2.0
