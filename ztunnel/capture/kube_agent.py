"""``python -m ztunnel.capture.kube_agent``: the node agent on Kubernetes (istio-cni's role), one per node.

It runs in the host network namespace (the node-agent DaemonSet in deploy/) and joins three parts:

* the Kubernetes loop (:class:`istiod_lite.kube.node_enrollment.NodeEnrollment`): this node's pods and
  the namespaces' labels decide which pods are in the ambient mesh; pods get the
  ``ambient.istio.io/redirection: enabled`` annotation once — and only while — they are captured;
* finding a pod's network namespace (:class:`PodNetnsFinder`): among the namespaces of the host's
  processes (``--host-proc``, the host's /proc mounted into the agent), the one in which the pod's IP is
  a local address. The container runtime's netns paths differ between runtimes; the pod's IP is what
  every runtime agrees on. The namespace is bind-mounted as ``/run/netns/am-k8s-pod-<uid>`` so the rest
  of the capture code can address it by name, and unmounted when the pod leaves the mesh;
* the node agent proper (:class:`~ztunnel.capture.agent.NodeAgent`): in-pod rules, then the namespace
  handed to the node's ztunnel over ZDS (``--zds-socket``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
import trio

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import KubeApi, load_config
from istiod_lite.kube.enrollment import EnrolledPod
from istiod_lite.kube.node_enrollment import NodeEnrollment, node_store
from meshcore.errors import MeshError
from meshcore.net.netns import NETNS_RUN_DIR, call_in_netns
from meshcore.ready import announce_ready
from meshcore.telemetry.logs import configure_logging
from ztunnel.capture import names
from ztunnel.capture.agent import CapturedPod, NodeAgent
from ztunnel.capture.commands import run_command
from ztunnel.capture.errors import UnknownPod

log = structlog.get_logger("ztunnel.capture.kube_agent")

PREFIX = "am-k8s"


class PodNetnsNotFound(MeshError):
    """No process of the host holds the pod's IP in its network namespace (yet)."""

    hint = "the pod's sandbox may still be starting; the node agent retries on the next change ({detail})"


def _is_local_address(ip: str) -> bool:
    """Whether ``ip`` is an address of the current network namespace (binding to it works only then)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, 0))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                return False
            raise
    return True


class PodNetnsFinder:
    """Finds pods' network namespaces through the host's /proc and names them under /run/netns."""

    def __init__(self, host_proc: Path, *, run_dir: Path = NETNS_RUN_DIR) -> None:
        self._proc = host_proc
        self._run_dir = run_dir

    def find_pid(self, ip: str) -> int | None:
        """A host process whose network namespace has ``ip`` as a local address (blocking: scans /proc)."""
        own = os.stat("/proc/self/ns/net").st_ino
        seen: set[int] = {own}
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            path = entry / "ns" / "net"
            try:
                inode = os.stat(path).st_ino
                if inode in seen:
                    continue
                seen.add(inode)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:  # the process exited, or is not ours to look at
                continue
            try:
                if call_in_netns(fd, _is_local_address, ip):
                    return int(entry.name)
            finally:
                os.close(fd)
        return None

    def netns_name(self, uid: str) -> str:
        return names.pod_netns(PREFIX, uid.lower())

    async def attach(self, uid: str, pid: int) -> str:
        """Bind-mount the process's namespace as ``/run/netns/<name>`` (what ``ip netns attach`` does)."""
        name = self.netns_name(uid)
        target = self._run_dir / name
        if await trio.to_thread.run_sync(os.path.ismount, target):  # left by an earlier agent: replace it
            await run_command(["umount", str(target)])
        await trio.to_thread.run_sync(self._prepare, target)
        await run_command(["mount", "--bind", str(self._proc / str(pid) / "ns" / "net"), str(target)])
        return name

    def _prepare(self, target: Path) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)

    async def detach(self, uid: str) -> None:
        target = self._run_dir / self.netns_name(uid)
        if await trio.to_thread.run_sync(os.path.ismount, target):
            await run_command(["umount", str(target)])
        await trio.to_thread.run_sync(lambda: target.unlink(missing_ok=True))


class KubeCapture:
    """:class:`~istiod_lite.kube.node_enrollment.CaptureTarget`: find the namespace, then the node agent."""

    def __init__(self, agent: NodeAgent, finder: PodNetnsFinder) -> None:
        self._agent = agent
        self._finder = finder

    async def add(self, pod: EnrolledPod) -> None:
        pid = await trio.to_thread.run_sync(self._finder.find_pid, pod.ip)
        if pid is None:
            raise PodNetnsNotFound(f"no network namespace on this node holds {pod.ip} ({pod.namespace}/{pod.name})",
                                   detail=f"pod uid {pod.uid}")
        netns = await self._finder.attach(pod.uid, pid)
        await self._agent.add_pod(CapturedPod(uid=pod.uid, name=pod.name, namespace=pod.namespace, netns=netns,
                                              ip=pod.ip, service_account=pod.service_account))
        log.info("pod_captured", pod=f"{pod.namespace}/{pod.name}", netns=netns, pid=pid)

    async def remove(self, pod: EnrolledPod) -> None:
        with contextlib.suppress(UnknownPod):  # never captured by this agent: nothing of ours in the pod
            await self._agent.remove_pod(pod.uid)
        await self._finder.detach(pod.uid)
        log.info("pod_released", pod=f"{pod.namespace}/{pod.name}")


async def serve(node: str, zds_socket: Path, host_proc: Path, kubeconfig: Path | None) -> None:
    api = KubeApi.connect(load_config(kubeconfig), rbac_usage.NODE_AGENT)
    agent = NodeAgent(zds_socket)
    store = node_store(api, node)
    enrollment = NodeEnrollment(api, store, node, KubeCapture(agent, PodNetnsFinder(host_proc)))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)  # connects when ztunnel is up; pods captured meanwhile are replayed
            await nursery.start(store.run)
            await nursery.start(enrollment.run)
            announce_ready("node-agent", {}, node=node, zds_socket=str(zds_socket))
    finally:
        await api.aclose()


def _leaves(group: BaseExceptionGroup[MeshError]) -> list[MeshError]:
    out: list[MeshError] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ztunnel.capture.kube_agent",
                                     description="The mesh's node agent on Kubernetes (captures ambient pods).")
    parser.add_argument("--node", required=True, help="this node's name (spec.nodeName of its pods)")
    parser.add_argument("--zds-socket", type=Path, required=True, help="the node ztunnel's ZDS socket")
    parser.add_argument("--host-proc", type=Path, default=Path("/proc"), help="the host's /proc")
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account, then $KUBECONFIG")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level, component="node-agent")
    failures: list[MeshError] = []
    try:
        trio.run(serve, args.node, args.zds_socket, args.host_proc, args.kubeconfig)
    except* MeshError as group:
        failures.extend(_leaves(group))
    except* KeyboardInterrupt:
        pass
    for failure in failures:
        print(f"node-agent: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
