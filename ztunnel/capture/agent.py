"""The node agent (istio-cni's role on one node): in-pod rules, then the pod's netns to ztunnel.

Order matters, as in istio-cni: rules are installed *before* ztunnel learns about the pod, so by the
time ztunnel opens its in-pod listeners every new connection is already captured; on removal ztunnel
is told first, then the rules go.

The agent is the long-lived party and ztunnel may restart: :meth:`NodeAgent.run` keeps (re)connecting
to ztunnel's ZDS socket and, on every connection, replays its whole pod set as the snapshot followed
by ``snapshot_sent``. Pods added while ztunnel is away are simply part of the next snapshot.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import structlog
import trio

from meshcore.net.errors import NetnsError
from meshcore.net.netns import open_netns
from ztunnel.capture.errors import UnknownPod, ZdsNack, ZdsProtocolError
from ztunnel.capture.rules import PodRules, install_pod_rules, remove_pod_rules, render_pod_rules
from ztunnel.capture.zds import WorkloadInfo
from ztunnel.capture.zds_client import (
    NodeAgentConnection,
    ZdsConnectionClosed,
    connect_ztunnel,
    open_node_agent_connection,
)

log = structlog.get_logger("ztunnel.capture.agent")

RECONNECT_MIN = 0.1
RECONNECT_MAX = 2.0


@attrs.frozen
class CapturedPod:
    """A pod the agent captures: its identity for ZDS, and where its namespace is."""

    uid: str
    name: str
    namespace: str
    netns: str  # an `ip netns` name (the fabric's pod netns)
    ip: str
    service_account: str = "default"

    @property
    def workload_info(self) -> WorkloadInfo:
        """What ztunnel is told about the pod."""
        return WorkloadInfo(name=self.name, namespace=self.namespace, service_account=self.service_account)


class NodeAgent:
    """Captures pods on one node and keeps one ztunnel informed over ZDS."""

    def __init__(self, ztunnel_socket: Path, *, rules: PodRules | None = None) -> None:
        self._socket_path = ztunnel_socket
        self._rules = rules if rules is not None else render_pod_rules()
        self._pods: dict[str, CapturedPod] = {}
        self._conn: NodeAgentConnection | None = None
        self._lock = trio.Lock()  # one writer of ZDS at a time: snapshot replay vs. add/remove
        self._connected = False
        self._changed = trio.Event()

    @property
    def connected(self) -> bool:
        """Whether ztunnel is connected and has acknowledged this connection's snapshot."""
        return self._connected

    def _set_connected(self, value: bool) -> None:
        self._connected = value
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self, value: bool = True) -> None:
        """Wait until the connection state is ``value`` (connected by default, or lost with False)."""
        while self._connected != value:
            await self._changed.wait()

    @property
    def pods(self) -> dict[str, CapturedPod]:
        """Pods currently captured, by uid."""
        return dict(self._pods)

    async def add_pod(self, pod: CapturedPod) -> None:
        """Install the pod's rules, then hand its netns to ztunnel (now, or in the next snapshot)."""
        await install_pod_rules(pod.netns, self._rules)
        self._pods[pod.uid] = pod
        async with self._lock:
            if self._conn is not None:
                try:
                    await self._send_add(self._conn, pod)
                except ZdsConnectionClosed as exc:  # ztunnel away: the next snapshot carries the pod
                    log.warning("zds add not delivered", uid=pod.uid, error=str(exc))

    async def remove_pod(self, uid: str) -> None:
        """Tell ztunnel the pod is gone, then take its rules out (if its namespace still exists)."""
        pod = self._pods.pop(uid, None)
        if pod is None:
            raise UnknownPod(f"no captured pod with uid {uid!r}", known=sorted(self._pods))
        async with self._lock:
            if self._conn is not None:
                try:
                    await self._conn.delete(uid)
                except ZdsProtocolError as exc:  # ztunnel away: the next snapshot omits the pod
                    log.warning("zds delete not delivered", uid=uid, error=str(exc))
        if await trio.Path("/run/netns", pod.netns).exists():
            await remove_pod_rules(pod.netns, self._rules)

    async def _send_add(self, conn: NodeAgentConnection, pod: CapturedPod) -> None:
        fd = open_netns(pod.netns)
        try:
            await conn.add(pod.uid, pod.workload_info, fd)
        finally:
            os.close(fd)

    async def _send_snapshot_entry(self, conn: NodeAgentConnection, pod: CapturedPod) -> None:
        """``add`` with a fresh fd; ``keep`` when the namespace cannot be opened (Istio's meaning of keep)."""
        try:
            await self._send_add(conn, pod)
        except NetnsError as exc:
            log.warning("pod netns unavailable, asking ztunnel to keep it", uid=pod.uid, error=str(exc))
            await conn.keep(pod.uid)
        except ZdsNack as exc:  # one bad pod must not keep the others uncaptured
            log.warning("zds snapshot add refused", uid=pod.uid, error=str(exc))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect to ztunnel, send the snapshot, stay connected; reconnect when ztunnel restarts.

        Reports started after the first snapshot is acknowledged. Runs until cancelled.
        """
        started = False
        delay = RECONNECT_MIN
        while True:
            try:
                sock = await connect_ztunnel(self._socket_path)
            except OSError:
                await trio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_MIN
            async with open_node_agent_connection(sock) as conn:
                try:
                    await conn.wait_hello()
                    async with self._lock:
                        for pod in list(self._pods.values()):
                            await self._send_snapshot_entry(conn, pod)
                        await conn.snapshot_sent()
                        self._conn = conn
                    self._set_connected(True)
                    log.info("zds snapshot sent", pods=len(self._pods), socket=str(self._socket_path))
                    if not started:
                        started = True
                        task_status.started()
                    await conn.closed.wait()
                except (ZdsProtocolError, ZdsNack, OSError) as exc:
                    log.warning("zds connection lost", error=str(exc))
                finally:
                    self._conn = None
                    if self._connected:
                        self._set_connected(False)
            await trio.sleep(delay)
