"""The HBONE client pool: multiplex tunnels over few mTLS HTTP/2 connections (DESIGN §3).

Connections are keyed by :class:`PoolKey` (source identity, expected destination identities, next hop)
so a tunnel never rides a connection authenticated as someone else. Per key:

* at most ``max_streams`` (100) tunnels per connection; at the cap a new connection is dialled;
* at most one dial in flight: other openers wait for it and share its outcome (1,000 simultaneous
  opens make one handshake, not 1,000);
* a connection with no tunnels for ``idle_timeout`` (5 min) is closed with GOAWAY;
* TCP connect + TLS handshake get ``connect_timeout`` (10 s) together, and the error says the
  HBONE port may be blocked.

TLS is injected per key: ``tls_for(key)`` returns the client ``SSLContext`` (our certificate, the
trust bundle, ALPN h2, no hostname check) and ``verify_server(ssl_stream)`` which checks the server's
SPIFFE identity against ``key.destination_identities`` and returns it, or raises.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import h2.errors
import structlog
import trio

from meshcore.hbone.connect import STATUS_MEANING, ConnectResponse, IPAddress, build_connect_headers
from meshcore.hbone.connection import HboneConnection
from meshcore.hbone.errors import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    HandshakeFailed,
    HboneError,
    StreamReset,
    rejected,
)
from meshcore.hbone.h2stream import HboneStream
from meshcore.hbone.server import VerifyPeer, call_verify

log = structlog.get_logger("meshcore.hbone.pool")

MAX_STREAMS_PER_CONNECTION = 100
IDLE_TIMEOUT = 300.0
CONNECT_TIMEOUT = 10.0
# Waiting for a shared dial and retrying after losing a race for the last slot are both bounded.
MAX_CHECKOUT_ROUNDS = 64


@attrs.frozen
class PoolKey:
    """Which connections a tunnel may share."""

    source_identity: str
    destination_identities: tuple[str, ...]
    host: str
    port: int = 15008

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


TlsFor = Callable[[PoolKey], tuple[ssl.SSLContext, VerifyPeer]]
Connector = Callable[[str, int], Awaitable[trio.abc.Stream]]


@attrs.define(eq=False)
class _Pooled:
    key: PoolKey
    connection: HboneConnection
    peer_identity: str
    active: int = 0
    refused: bool = False  # the server refused a stream: it is draining, use another connection
    idle_scope: trio.CancelScope = attrs.field(factory=lambda: trio.CancelScope(deadline=math.inf))

    def has_room(self, cap: int) -> bool:
        if self.refused or not self.connection.usable or self.idle_scope.cancel_called:
            return False
        return self.active < min(cap, self.connection.remote_max_streams())


@attrs.define(eq=False)
class _Dial:
    done: trio.Event = attrs.field(factory=trio.Event)
    error: HboneError | None = None


@attrs.frozen
class PoolStatistics:
    connections: int
    streams: int
    dials: int


def tcp_connector(local_address: str | None = None) -> Connector:
    """Plain TCP dialer; ``local_address`` binds the source IP (proxy mode gives every node and pod an
    address of its own, DESIGN §4, and the destination sees who is calling by it)."""

    async def connect(host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port, local_address=local_address)

    return connect


class HbonePool:
    """Client side of HBONE. Run it in a nursery (``await nursery.start(pool.run)``), then :meth:`open`."""

    def __init__(
        self,
        tls_for: TlsFor,
        *,
        connector: Connector | None = None,
        max_streams: int = MAX_STREAMS_PER_CONNECTION,
        idle_timeout: float = IDLE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self._tls_for = tls_for
        self._connector = connector or tcp_connector()
        self._max_streams = max_streams
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._pooled: dict[PoolKey, list[_Pooled]] = {}
        self._dials: dict[PoolKey, _Dial] = {}
        self._nursery: trio.Nursery | None = None
        self.dials = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the pool's connections until cancelled; cancelling closes them all."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def statistics(self) -> PoolStatistics:
        entries = [entry for entries in self._pooled.values() for entry in entries]
        return PoolStatistics(
            connections=len(entries), streams=sum(entry.active for entry in entries), dials=self.dials
        )

    @asynccontextmanager
    async def open(
        self,
        key: PoolKey,
        authority: str,
        headers: Sequence[tuple[str, str]] = (),
        *,
        forwarded_for: tuple[IPAddress | str, int] | None = None,
        forwarded_host: str | None = None,
        baggage: str | None = None,
        traceparent: str | None = None,
    ) -> AsyncIterator[tuple[ConnectResponse, HboneStream]]:
        """Open a tunnel to ``authority`` (``ip:port`` / ``[v6]:port``) through ``key.host``.

        Yields (response, stream). ``forwarded_for`` is the original client address (sent as
        ``forwarded: for="ip:port"``); ``headers`` are extra request headers. A non-200 answer raises
        :class:`~meshcore.hbone.errors.ConnectRejected` (``ConnectDenied`` for 401) carrying the status.
        The stream is closed on exit (RST_STREAM if the tunnel did not finish both ways).
        """
        request = build_connect_headers(
            authority,
            forwarded_for=forwarded_for,
            forwarded_host=forwarded_host,
            baggage=baggage,
            traceparent=traceparent,
            extra=headers,
        )
        entry, stream = await self._open_stream(key, request)
        try:
            try:
                response = stream.response
                assert response is not None
                if response.status != 200:
                    meaning = STATUS_MEANING.get(response.status, "unexpected status")
                    raise rejected(response.status, peer=key.address, authority=authority, meaning=meaning)
                yield response, stream
            finally:
                await stream.aclose()
        finally:
            self._checkin(entry)

    async def _open_stream(self, key: PoolKey, request: list[tuple[str, str]]) -> tuple[_Pooled, HboneStream]:
        """Open on a pooled connection; a REFUSED_STREAM (the server is draining and did nothing with
        the request) is retried once on another connection."""
        for attempt in range(2):
            entry = await self._checkout(key)
            try:
                return entry, await entry.connection.open_stream(request)
            except StreamReset as exc:
                self._checkin(entry)
                if attempt == 0 and exc.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                    entry.refused = True
                    continue
                raise
            except ConnectionLost as exc:
                self._checkin(entry)
                if entry.connection.responses_received == 0:
                    # TLS 1.3 reports a refused client certificate only on the first read, after
                    # do_handshake() succeeded: a connection that dies before any answer is that.
                    raise HandshakeFailed(
                        f"{key.address} closed the connection before answering any CONNECT",
                        peer=key.address,
                        reason=f"{exc.context.get('reason', exc)}; it may have refused our certificate",
                    ) from exc
                raise
            except BaseException:
                self._checkin(entry)
                raise
        raise AssertionError("unreachable")

    # -- checkout/checkin: synchronous decisions between awaits, so no locks are needed --

    async def _checkout(self, key: PoolKey) -> _Pooled:
        for _ in range(MAX_CHECKOUT_ROUNDS):
            for entry in self._pooled.get(key, ()):
                if entry.has_room(self._max_streams):
                    entry.active += 1
                    entry.idle_scope.deadline = math.inf
                    return entry
            dial = self._dials.get(key)
            if dial is not None:
                await dial.done.wait()
                if dial.error is not None:
                    raise type(dial.error)(dial.error.message, **dial.error.context)
                continue
            dial = self._dials[key] = _Dial()
            try:
                entry = await self._dial(key)
            except HboneError as exc:
                dial.error = exc
                raise
            finally:
                del self._dials[key]
                dial.done.set()
            entry.active += 1
            return entry
        raise ConnectFailed(
            f"no HBONE connection to {key.address} had room after {MAX_CHECKOUT_ROUNDS} rounds",
            peer=key.address,
        )

    def _checkin(self, entry: _Pooled) -> None:
        entry.active -= 1
        if entry.active == 0:
            entry.idle_scope.deadline = trio.current_time() + self._idle_timeout

    async def _dial(self, key: PoolKey) -> _Pooled:
        assert self._nursery is not None, "HbonePool.run() must be started before open()"
        self.dials += 1
        ssl_context, verify_server = self._tls_for(key)
        transport: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self._connect_timeout):
                try:
                    transport = await self._connector(key.host, key.port)
                except OSError as exc:
                    raise ConnectFailed(
                        f"TCP connect to {key.address} failed: {exc}", peer=key.address
                    ) from exc
                tls_stream = trio.SSLStream(
                    transport, ssl_context, server_hostname=None, https_compatible=True
                )
                transport = tls_stream
                identity = await _handshake(tls_stream, verify_server, key)
        except trio.TooSlowError:
            if transport is not None:
                await trio.aclose_forcefully(transport)
            raise ConnectTimeout(
                f"HBONE connect to {key.address} timed out", peer=key.address, timeout=self._connect_timeout
            ) from None
        except BaseException:
            if transport is not None:
                await trio.aclose_forcefully(transport)
            raise
        connection = HboneConnection(transport, client_side=True, peer=key.address)
        entry = _Pooled(key=key, connection=connection, peer_identity=identity)
        await self._nursery.start(self._serve, entry)
        log.debug("hbone_pool_connected", peer=key.address, peer_identity=identity)
        return entry

    async def _serve(
        self, entry: _Pooled, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run one pooled connection and its idle timer; forget it when it ends."""
        self._pooled.setdefault(entry.key, []).append(entry)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._idle_reaper, entry)
                task_status.started()
                await entry.connection.run()
                # the connection ended (peer closed, failure, idle release): stop its idle timer
                nursery.cancel_scope.cancel()
        finally:
            entries = self._pooled.get(entry.key, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._pooled.pop(entry.key, None)

    async def _idle_reaper(self, entry: _Pooled) -> None:
        with entry.idle_scope:
            await trio.sleep_forever()
        log.debug("hbone_pool_idle_release", peer=entry.key.address, idle_timeout=self._idle_timeout)
        await entry.connection.aclose()


async def _handshake(tls_stream: trio.SSLStream[trio.abc.Stream], verify: VerifyPeer, key: PoolKey) -> str:
    try:
        await tls_stream.do_handshake()
    except trio.BrokenResourceError as exc:
        reason = str(exc.__cause__ or exc)
        raise HandshakeFailed(
            f"TLS handshake with {key.address} failed", peer=key.address, reason=reason
        ) from exc
    if tls_stream.selected_alpn_protocol() != "h2":
        raise HandshakeFailed(
            f"{key.address} did not negotiate ALPN h2",
            peer=key.address,
            reason=f"ALPN {tls_stream.selected_alpn_protocol()!r}",
        )
    try:
        return await call_verify(verify, tls_stream)
    except HboneError:
        raise
    except Exception as exc:
        raise HandshakeFailed(
            f"{key.address} presented an unexpected identity", peer=key.address, reason=str(exc)
        ) from exc


__all__ = ["ConnectionLost", "HbonePool", "PoolKey", "PoolStatistics"]
