"""Listeners for REDIRECTed traffic (netns mode): outbound on 15001, inbound plaintext on 15006.

The capture code (:mod:`ztunnel.capture.inpod`) opens these sockets *inside* a pod's namespace and
hands them in; the in-pod nat rules send the pod's outbound TCP to 15001 and inbound TCP that is not
HBONE to 15006. Where a connection was going is read back with ``SO_ORIGINAL_DST``. Both hooks that
touch the pod's namespace are injected — ``original_destination`` and, for inbound, ``connect_app``
(netns mode dials the app from inside the pod, transparently bound to the client's address) — so the
proxying logic here is the same as in proxy mode and is tested on loopback.

* 15001: the pod is the source; the connection is carried by :class:`~ztunnel.outbound.Outbound`
  exactly like an explicit-proxy one, with nobody to send a proxy reply to.
* 15006: no identity is known, so :func:`~ztunnel.inbound_decision.decide_inbound_plaintext` decides
  (PeerAuthentication STRICT refuses); a refused connection is reset, as ztunnel does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable, Sequence

import structlog
import trio

from meshcore.errors import MeshError
from meshcore.hbone.copy import CopyStats
from meshcore.net.sockopts import original_destination
from meshcore.ready import format_address
from schemas.discovery import Workload
from ztunnel.accept import serve_until_drained
from ztunnel.drain import Drain
from ztunnel.explicit_proxy_protocol import Outcome
from ztunnel.inbound import AppConnector
from ztunnel.inbound_decision import decide_inbound_plaintext
from ztunnel.outbound import Outbound
from ztunnel.state import ProxyState
from ztunnel.telemetry import ConnectionFacts, ConnectionTelemetry, copy_reporting

log = structlog.get_logger("ztunnel.captured")

APP_CONNECT_TIMEOUT = 10.0

OriginalDestination = Callable[[trio.SocketStream], tuple[str, int]]


def socket_original_destination(stream: trio.SocketStream) -> tuple[str, int]:
    return original_destination(stream.socket)


async def _open_app(host: str, port: int, _client_ip: str) -> trio.abc.Stream:
    return await trio.open_tcp_stream(host, port)


def _peer(stream: trio.SocketStream) -> tuple[str, int]:
    host, port, *_ = stream.socket.getpeername()
    return str(host), int(port)


async def _reset(stream: trio.SocketStream) -> None:
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.aclose_forcefully(stream)


async def _no_reply(_outcome: Outcome) -> None:
    """A captured client asked nobody for a proxy: it learns the outcome from the stream itself."""
    await trio.lowlevel.checkpoint()


class CapturedOutbound:
    """15001 of one pod: every connection is that pod's outbound traffic to its original destination."""

    def __init__(
        self,
        workload: Workload,
        *,
        listeners: Sequence[trio.SocketListener],
        outbound: Outbound,
        drain: Drain,
        original_destination: OriginalDestination = socket_original_destination,
    ) -> None:
        self.workload = workload
        self._listeners = list(listeners)
        self._outbound = outbound
        self._drain = drain
        self._original_destination = original_destination

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_until_drained(self._listeners, self.handle, self._drain,
                                  name=f"captured-outbound {self.workload.uid}", task_status=task_status)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                host, port = self._original_destination(stream)
                client = format_address(*_peer(stream))
            except (MeshError, OSError) as exc:
                log.warning("captured_outbound_without_destination", workload=self.workload.uid, error=str(exc))
                return
            try:
                await self._outbound.serve(self.workload, stream, client, host, port, reply=_no_reply)
            except Exception:  # one connection's bug must not take the pod's listener down
                log.exception("captured_outbound_failed", workload=self.workload.uid, target=f"{host}:{port}")


class PlaintextInbound:
    """15006 of one pod: plaintext connections to the pod, authorized without an identity."""

    def __init__(
        self,
        workload: Workload,
        *,
        listeners: Sequence[trio.SocketListener],
        state: ProxyState,
        node: str,
        telemetry: ConnectionTelemetry,
        drain: Drain,
        original_destination: OriginalDestination = socket_original_destination,
        connect_app: AppConnector = _open_app,
    ) -> None:
        self.workload = workload
        self._listeners = list(listeners)
        self._state = state
        self._node = node
        self._telemetry = telemetry
        self._drain = drain
        self._original_destination = original_destination
        self._connect_app = connect_app

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_until_drained(self._listeners, self.handle, self._drain,
                                  name=f"inbound-plaintext {self.workload.uid}", task_status=task_status)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            dst_ip, dst_port = self._original_destination(stream)
            src_ip, src_port = _peer(stream)
        except (MeshError, OSError) as exc:
            log.warning("inbound_plaintext_without_destination", workload=self.workload.uid, error=str(exc))
            await _reset(stream)
            return
        network = self.workload.network
        target = self._state.workload_by_ip(dst_ip, network)
        verdict = decide_inbound_plaintext(
            source_ip=src_ip, destination_ip=dst_ip, destination_port=dst_port, target=target, node=self._node,
            policies=self._state.policies_for(target) if target is not None else [])
        facts = ConnectionFacts(
            direction="inbound",
            src_addr=format_address(src_ip, src_port),
            dst_addr=format_address(dst_ip, dst_port),
            source=self._state.workload_by_ip(src_ip, network),
            destination=target,
            destination_identity=target.identity if target is not None else None,
        )
        if not verdict.allowed:
            tracked = self._telemetry.track(facts, verdict.response_flags)
            log.info("inbound_plaintext_refused", src=facts.src_addr, dst=facts.dst_addr, reason=verdict.reason)
            await _reset(stream)
            tracked.finish(result=str(int(verdict.status)), error=verdict.reason)
            return
        with self._drain.connection():
            await self._carry(stream, dst_ip, dst_port, src_ip, facts)

    async def _carry(
        self, stream: trio.SocketStream, dst_ip: str, dst_port: int, src_ip: str, facts: ConnectionFacts
    ) -> None:
        try:
            with trio.fail_after(APP_CONNECT_TIMEOUT):
                app = await self._connect_app(dst_ip, dst_port, src_ip)
        except (OSError, MeshError, trio.TooSlowError) as exc:
            tracked = self._telemetry.track(facts, "CONNECT")
            await _reset(stream)
            tracked.finish(result="connect_failed", error=f"{type(exc).__name__}: {exc}")
            return
        tracked = self._telemetry.track(facts)
        stats = CopyStats()
        try:
            async with stream, app:
                await copy_reporting(tracked, stream, app, stats)
        finally:
            tracked.finish(bytes_received=stats.downstream_to_upstream, bytes_sent=stats.upstream_to_downstream,
                           result="reset" if stats.reset else "ok", error=stats.error)
