"""netns mode: ztunnel's proxy code serving one captured pod through listeners inside its namespace.

:class:`~ztunnel.capture.inpod.InPodWorkloadManager` opens the pod's listeners in its namespace when the
node agent hands the namespace over (ZDS ``add``) and calls :meth:`InPodProxy.serve` for the pod's
lifetime. Everything specific to netns mode is *where sockets are made*; what flows through them is the
same code as proxy mode:

* 15001 (outbound, REDIRECTed): :class:`~ztunnel.captured.CapturedOutbound` → :class:`~ztunnel.outbound.
  Outbound`, whose HBONE pool and plain-TCP dialer create their sockets in the pod's namespace with
  ``SO_MARK 0x539``, so the pod's rules let them out and peers see the pod's own IP;
* 15008 (HBONE from other ztunnels and waypoints): :class:`~ztunnel.inbound.InboundListener` with the
  pod's certificate; the app is dialled from inside the pod from an ``IP_TRANSPARENT`` socket bound to
  the client's address, so the app sees its real peer;
* 15006 (plaintext inbound, REDIRECTed): :class:`~ztunnel.captured.PlaintextInbound` (PeerAuthentication
  STRICT refuses), app dialled the same way;
* ``127.0.0.1:15053`` UDP (the rules redirect DNS there): :class:`~ztunnel.dns.server.DnsProxy`.

The node agent usually enrolls a pod before istiod_lite's push names it, so serving waits (bounded)
until the pod's workload — matched by namespace and name on this node — and its certificate are known.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
import trio

from meshcore.hbone.pool import HbonePool
from meshcore.identity.spiffe import Identity
from meshcore.net.netns import connect_tcp_from_netns
from meshcore.net.sockopts import PROXY_MARK
from schemas.discovery import Workload
from ztunnel.capture.inpod import InPodWorkload
from ztunnel.captured import CapturedOutbound, PlaintextInbound
from ztunnel.certificates import CertificateStore
from ztunnel.dns.server import DnsProxy
from ztunnel.drain import Drain
from ztunnel.inbound import InboundListener
from ztunnel.outbound import Outbound
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionTelemetry

log = structlog.get_logger("ztunnel.inpod")

WORKLOAD_WAIT = 60.0  # how long an enrolled pod may wait for discovery to name it before it is given up
POLL = 0.1


def _listener(sock: trio.socket.SocketType) -> trio.SocketListener:
    return trio.SocketListener(sock)


def netns_dialer(netns_fd: int) -> Callable[[str, int], Awaitable[trio.abc.Stream]]:
    """ztunnel's own outbound connections for one pod: made in its namespace, marked so rules skip them."""

    async def dial(host: str, port: int) -> trio.abc.Stream:
        return await connect_tcp_from_netns(netns_fd, (host, port), mark=PROXY_MARK)

    return dial


def transparent_app_connector(netns_fd: int) -> Callable[[str, int, str], Awaitable[trio.abc.Stream]]:
    """Dial the app inside its pod from the client's address (IP_TRANSPARENT + IP_FREEBIND)."""

    async def connect(host: str, port: int, client_ip: str) -> trio.abc.Stream:
        return await connect_tcp_from_netns(netns_fd, (host, port), mark=PROXY_MARK, source_ip=client_ip)

    return connect


class InPodProxy:
    """The serve callback of the in-pod manager, with the node's shared state and certificates."""

    def __init__(
        self,
        *,
        node: str,
        state: ProxyState,
        certificates: CertificateStore,
        telemetry: ConnectionTelemetry,
        drain: Drain,
        dns_upstream: tuple[str, int] | None,
    ) -> None:
        self._node = node
        self._state = state
        self._certificates = certificates
        self._telemetry = telemetry
        self._drain = drain
        self._dns_upstream = dns_upstream
        self.serving: dict[str, str] = {}  # ZDS uid → workload uid, for /config_dump and readiness

    def _workload_for(self, pod: InPodWorkload) -> Workload | None:
        for workload in self._state.local_workloads(self._node):
            if workload.uid == pod.uid:
                return workload
            if pod.info is not None and (workload.namespace, workload.name) == (pod.info.namespace, pod.info.name):
                return workload
        return None

    async def _wait_until_known(self, pod: InPodWorkload) -> tuple[Workload, Identity] | None:
        with trio.move_on_after(WORKLOAD_WAIT):
            while True:
                workload = self._workload_for(pod)
                if workload is not None:  # its certificate follows the state (Ztunnel.state_changed)
                    identity = Identity.parse(workload.identity)
                    if self._certificates.has(identity):
                        return workload, identity
                await trio.sleep(POLL)
        log.error("inpod_workload_unknown", uid=pod.uid, info=str(pod.info), waited_s=WORKLOAD_WAIT,
                  hint="the node agent enrolled a pod that discovery does not place on this node")
        return None

    async def serve(self, pod: InPodWorkload) -> None:
        """Serve ``pod``'s listeners until cancelled (ZDS ``del`` or shutdown)."""
        known = await self._wait_until_known(pod)
        if known is None:
            return
        workload, identity = known
        fd = pod.netns_fd
        pool = HbonePool(self._certificates.pool_tls, connector=netns_dialer(fd))
        outbound = Outbound(state=self._state, pool=pool, telemetry=self._telemetry, drain=self._drain,
                            dialer=netns_dialer(fd))
        connect_app = transparent_app_connector(fd)
        inbound = InboundListener(
            workload, host="0.0.0.0", port=15008, listeners=[_listener(pod.sockets.hbone)], state=self._state,
            telemetry=self._telemetry, drain=self._drain,
            ssl_context=self._certificates.server_context(identity),
            verify_client=self._certificates.verify_client(identity), app_bind_address=None,
            connect_app=connect_app,
        )
        captured = CapturedOutbound(workload, listeners=[_listener(pod.sockets.outbound)], outbound=outbound,
                                    drain=self._drain)
        plaintext = PlaintextInbound(workload, listeners=[_listener(pod.sockets.inbound_plaintext)],
                                     state=self._state, node=self._node, telemetry=self._telemetry,
                                     drain=self._drain, connect_app=connect_app)
        network = workload.network
        dns = DnsProxy(lambda name: self._state.host_addresses(name, network), host="127.0.0.1",
                       upstream=self._dns_upstream)
        self.serving[pod.uid] = workload.uid
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(pool.run)
                await nursery.start(inbound.run)
                await nursery.start(captured.run)
                await nursery.start(plaintext.run)
                await nursery.start(dns.serve_udp_socket, pod.sockets.dns_udp)
                log.info("inpod_serving", uid=pod.uid, workload=workload.uid, identity=str(identity))
        finally:
            self.serving.pop(pod.uid, None)
