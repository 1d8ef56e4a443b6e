"""ztunnel's per-pod side of capture: listeners opened *inside* each pod's namespace, and their lifetime.

On ZDS ``add`` ztunnel gets the pod's netns fd. :class:`InPodWorkloadManager` (a ZDS handler) then:

1. keeps its own duplicate of the fd (outbound HBONE sockets and transparent app connections must be
   created in the pod's namespace for as long as the pod lives);
2. opens the capture listeners in that namespace (:func:`open_inpod_sockets`), with the addresses the
   rules require (see :mod:`ztunnel.capture.rules`): 15001, 15006 and 15008 on ``0.0.0.0``, DNS
   on ``127.0.0.1:15053`` (UDP replies must leave from the redirect target address);
3. runs ztunnel's ``serve`` callback for the pod in a task of its own, under a cancel scope.

On ``del`` the pod's task is cancelled and awaited, then its sockets and fd are closed — so a pod that
is gone leaves no listener behind. The proxying itself (what ``serve`` does with the listeners) lives
in ztunnel's inbound/outbound modules; this module only owns where and how long.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Awaitable, Callable

import attrs
import structlog
import trio

from meshcore.net.netns import listen_tcp_in_netns, run_in_netns
from ztunnel.capture.errors import ZdsProtocolError
from ztunnel.capture.rules import CaptureConfig
from ztunnel.capture.zds import WorkloadInfo

log = structlog.get_logger("ztunnel.capture.inpod")

DEFAULT_CONFIG = CaptureConfig()


@attrs.frozen
class InPodSockets:
    """The capture listeners of one pod, all living in the pod's namespace."""

    outbound: trio.socket.SocketType  # 15001: REDIRECTed outbound TCP (SO_ORIGINAL_DST)
    inbound_plaintext: trio.socket.SocketType  # 15006: REDIRECTed inbound TCP (SO_ORIGINAL_DST)
    hbone: trio.socket.SocketType  # 15008: mTLS HBONE from other ztunnels/waypoints
    dns_udp: trio.socket.SocketType  # 127.0.0.1:15053: REDIRECTed UDP 53

    def close(self) -> None:
        """Close every listener."""
        for sock in (self.outbound, self.inbound_plaintext, self.hbone, self.dns_udp):
            sock.close()


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_inpod_sockets(netns_fd: int, cfg: CaptureConfig = DEFAULT_CONFIG) -> InPodSockets:
    """Open the pod's four capture listeners; on any failure none stays open."""
    opened: list[trio.socket.SocketType] = []
    try:
        for port in (cfg.outbound_port, cfg.inbound_plaintext_port, cfg.hbone_port):
            opened.append(await listen_tcp_in_netns(netns_fd, "0.0.0.0", port))
        udp = await run_in_netns(netns_fd, _udp_socket, "127.0.0.1", cfg.dns_port)
        opened.append(trio.socket.from_stdlib_socket(udp))
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return InPodSockets(*opened)


@attrs.frozen
class InPodWorkload:
    """One captured pod as ztunnel's proxy code sees it."""

    uid: str
    info: WorkloadInfo | None
    netns_fd: int  # owned by the manager; valid until the pod's serve task has ended
    sockets: InPodSockets


ServePod = Callable[[InPodWorkload], Awaitable[None]]


@attrs.define
class _Running:
    workload: InPodWorkload
    scope: trio.CancelScope
    done: trio.Event


class InPodWorkloadManager:
    """A ZDS handler that runs ``serve(workload)`` per captured pod inside its own namespace."""

    def __init__(self, serve: ServePod, *, config: CaptureConfig = DEFAULT_CONFIG) -> None:
        self._serve = serve
        self._config = config
        self._running: dict[str, _Running] = {}
        self._nursery: trio.Nursery | None = None

    @property
    def workloads(self) -> dict[str, InPodWorkload]:
        """The pods currently served, by uid."""
        return {uid: running.workload for uid, running in self._running.items()}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pods' tasks until cancelled; on exit every pod's listeners and fd are closed."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        """Open the pod's listeners in its namespace and start serving them."""
        if self._nursery is None:
            raise ZdsProtocolError(
                "in-pod manager is not running", detail="start InPodWorkloadManager.run first"
            )
        if uid in self._running:
            return
        own_fd = os.dup(netns_fd)
        try:
            sockets = await open_inpod_sockets(own_fd, self._config)
        except BaseException:
            os.close(own_fd)
            raise
        running = _Running(InPodWorkload(uid, info, own_fd, sockets), trio.CancelScope(), trio.Event())
        self._running[uid] = running
        self._nursery.start_soon(self._serve_pod, running)
        log.info("in-pod listeners open", uid=uid)

    async def _serve_pod(self, running: _Running) -> None:
        try:
            with running.scope:
                await self._serve(running.workload)
        except Exception as exc:  # one pod's failure must not take the node's other pods down
            log.error("in-pod serve failed", uid=running.workload.uid, error=str(exc))
        finally:
            running.workload.sockets.close()
            os.close(running.workload.netns_fd)
            self._running.pop(running.workload.uid, None)
            running.done.set()

    async def on_del(self, uid: str) -> None:
        """Stop serving the pod and wait until its listeners are closed."""
        running = self._running.get(uid)
        if running is None:
            return
        running.scope.cancel()
        await running.done.wait()
        log.info("in-pod listeners closed", uid=uid)
