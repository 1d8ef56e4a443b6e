"""netns capture for `meshctl up`: each pod in a network namespace, captured like Istio's CNI does it.

What the runner adds in this mode (DESIGN §4):

* the fabric (:class:`~ztunnel.capture.fabric.Fabric`): a bridge in a namespace of its own and one
  namespace per pod and per waypoint, addresses from 198.18.0.0/16, recorded in ``<state>/fabric.json``
  before anything is created — so a runner killed with SIGKILL leaves a record the next `up` removes;
* a resolv.conf view per pod (``ip netns exec`` mounts ``/etc/netns/NAME/resolv.conf``) with Kubernetes'
  search path, so short service names resolve through ztunnel's in-pod DNS proxy;
* a node agent per node (:class:`~ztunnel.capture.agent.NodeAgent`, istio-cni's role): in-pod iptables
  rules, then the pod's namespace handed to its node's ztunnel over ZDS — before the app starts, as the
  CNI plugin runs before a pod's containers do.

The fabric's prefix is derived from the state directory, so two meshes on one machine never share
names, and everything is removed by name under that prefix only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import structlog
import trio

from ztunnel.capture.agent import CapturedPod, NodeAgent
from ztunnel.capture.fabric import Fabric, PodNetwork, cleanup_from_state

log = structlog.get_logger("meshctl.runner.netns")

SEARCH_DOMAINS = ("svc.cluster.local", "cluster.local")


def netns_available() -> tuple[bool, str]:
    """Whether this process can run netns mode here, and why not when it cannot."""
    if os.geteuid() != 0:
        return False, "not root (network namespaces and iptables need root)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` is not installed (apt: iproute2, iptables)"
    return True, "root with iproute2 and iptables"


def fabric_prefix(state_dir: Path) -> str:
    """``am-`` and five hex digits of the state directory's path: stable per mesh, distinct across meshes."""
    return "am-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:5]


def fabric_pod_name(key: str) -> str:
    """A pod key (``namespace/name``) as a fabric pod name: a DNS label of at most 40 characters."""
    name = re.sub(r"[^a-z0-9-]", "-", key.lower()).strip("-")
    if len(name) > 40:
        name = name[:33].rstrip("-") + "-" + hashlib.sha256(key.encode()).hexdigest()[:6]
    return name or "pod"


def zds_socket(state_dir: Path, node: str) -> Path:
    return state_dir / "zds" / f"{node}.sock"


class PodNetworks:
    """The fabric, the resolv.conf views and the node agents of one runner."""

    def __init__(self, state_dir: Path, nodes: list[str]) -> None:
        self.state_path = state_dir / "fabric.json"
        self.fabric = Fabric(self.state_path, prefix=fabric_prefix(state_dir))
        zds_socket(state_dir, nodes[0]).parent.mkdir(parents=True, exist_ok=True)
        self.agents = {node: NodeAgent(zds_socket(state_dir, node)) for node in nodes}
        self._captured: dict[str, str] = {}  # pod key → node whose agent captured it

    @property
    def prefix(self) -> str:
        return self.fabric.prefix

    async def recover(self) -> bool:
        """Remove what an earlier runner of this state directory left (it was killed); True if anything."""
        if not await trio.Path(self.state_path).exists():
            return False
        await cleanup_from_state(self.state_path)
        return True

    async def create(self) -> None:
        await self.fabric.create()

    async def run_agents(self, nursery: trio.Nursery) -> None:
        """Each agent connects to its node's ztunnel (and reconnects after a ztunnel restart)."""
        for agent in self.agents.values():
            nursery.start_soon(agent.run)

    async def add_pod(self, key: str, namespace: str) -> PodNetwork:
        name = fabric_pod_name(key)
        pod = await self.fabric.create_pod(name)
        await self.fabric.write_resolv_conf(name, search=(f"{namespace}.svc.cluster.local", *SEARCH_DOMAINS))
        return pod

    async def capture(self, key: str, pod: PodNetwork, *, node: str, service_account: str) -> None:
        """Rules into the pod and its namespace to the node's ztunnel (now, or in the next snapshot)."""
        namespace, _, name = key.partition("/")
        await self.agents[node].add_pod(CapturedPod(
            uid=f"Kubernetes//Pod/{key}", name=name, namespace=namespace, netns=pod.netns, ip=pod.ip,
            service_account=service_account,
        ))
        self._captured[key] = node

    async def remove_pod(self, key: str) -> None:
        node = self._captured.pop(key, None)
        if node is not None:
            await self.agents[node].remove_pod(f"Kubernetes//Pod/{key}")
        name = fabric_pod_name(key)
        if name in self.fabric.pods:
            await self.fabric.delete_pod(name)

    async def destroy(self) -> None:
        """Every pod namespace, the bridge and the state file (the rules go with the namespaces)."""
        self._captured.clear()
        await self.fabric.destroy()
