"""The trio shell of config push: owns the published catalog, the debounce task and one task pair per proxy.

``publish()`` only records the newest snapshot and wakes the debounce task, so a store watcher can call
it on every change; the debounce task turns a burst into one catalog update and wakes every subscriber.
Each connection has its own sender loop that pulls its next push from its :class:`Subscriber` (built
from the newest catalog at send time), so a proxy that reads slowly only delays itself, and a receiver
loop that feeds ACK/NACKs back. Mount :meth:`PushServer.handler` on the control server at ``/v1/xds``
and run :meth:`PushServer.run` in the same nursery.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping
from typing import Protocol

import attrs
import trio
import trio_websocket

from istiod_lite.push.debounce import Debouncer
from istiod_lite.push.delta import Snapshot, version_of
from istiod_lite.push.metrics import PushMetrics
from istiod_lite.push.status import SyncState, sync_state
from istiod_lite.push.subscriber import (
    AnswerOutcome,
    Published,
    Subscriber,
    SubscriberProtocolError,
    TypeStatus,
)
from meshcore.push.protocol import Ack, Nack, Push, PushProtocolError, Subscribe, decode, encode
from meshcore.telemetry.logs import get_logger

_log = get_logger("istiod_lite.push")

_POLICY_VIOLATION = 1008


class Caller(Protocol):
    """The authenticated peer as the control server hands it over: the node its token belongs to, and who
    it is (a waypoint has no node of its own)."""

    @property
    def node(self) -> str: ...

    @property
    def subject(self) -> str: ...


@attrs.frozen
class ProxyTypeStatus:
    """One proxy-status row: the subscriber's record plus the verdict against the published version."""

    proxy: str
    type: str
    state: SyncState
    published_version: str | None
    sent_version: str | None
    sent_nonce: str | None
    acked_version: str | None
    nack_error: str | None

    def to_json(self) -> dict[str, str | None]:
        return attrs.asdict(self)


@attrs.define
class PushStatistics:
    connected: int = 0
    pushes: int = 0
    acks: int = 0
    nacks: int = 0
    catalog_updates: int = 0


class _Wakeup:
    """A level-triggered flag: ``set()`` any number of times, ``wait()`` returns once and re-arms."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = trio.Event()


@attrs.define(eq=False)
class _Connection:
    subscriber: Subscriber
    wakeup: _Wakeup


class PushServer:
    """Config push to every connected proxy; see the module docstring."""

    def __init__(
        self,
        *,
        types: Collection[str] | None = None,
        debounce: float = 0.1,
        max_delay: float = 1.0,
        instance: str | None = None,
        metrics: PushMetrics | None = None,
    ) -> None:
        self._types = frozenset(types) if types is not None else None
        self._debouncer = Debouncer(quiet=debounce, max_delay=max_delay)
        self._instance = instance if instance is not None else secrets.token_hex(4)
        self._catalog: dict[str, Published] = {}
        self._pending: dict[str, Snapshot] = {}
        self._publish_wakeup = _Wakeup()
        self._connections: dict[str, _Connection] = {}
        self._serial = 0
        self.stats = PushStatistics()
        self._metrics = metrics
        self._changed = trio.Event()

    # ---------------------------------------------------------------------------------- publishing

    def publish(self, snapshot_by_type: Mapping[str, Mapping[str, object]]) -> None:
        """Make these the newest resources of the given types (other types keep theirs); debounced.

        The bodies are shared, not copied: build fresh dicts for every publish and never mutate them after.
        """
        if self._types is not None and not self._types.issuperset(snapshot_by_type):
            unknown = sorted(set(snapshot_by_type) - self._types)
            raise ValueError(
                f"publish of types {unknown} this server was not set up to push ({sorted(self._types)})"
            )
        for type_name, resources in snapshot_by_type.items():
            self._pending[type_name] = dict(resources)
        self._debouncer.changed(trio.current_time())
        self._publish_wakeup.set()

    def catalog(self) -> dict[str, Published]:
        """The published state by type (what a newly connecting proxy gets as its full push)."""
        return dict(self._catalog)

    async def wait_published(self, type_name: str, version: str | None = None) -> Published:
        """Wait until ``type_name`` is published (at ``version``, if given); for tests and readiness."""
        while True:
            published = self._catalog.get(type_name)
            if published is not None and (version is None or published.version == version):
                return published
            await self.wait_changed()

    async def wait_changed(self) -> None:
        """Wait for the next change of the catalog or of any proxy's status (admin long-poll, tests)."""
        await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _flush(self) -> None:
        changed: set[str] = set()
        for type_name, resources in self._pending.items():
            version = version_of(resources)
            current = self._catalog.get(type_name)
            if current is None or current.version != version:
                self._catalog[type_name] = Published(version, resources, published_at=trio.current_time())
                changed.add(type_name)
        self._pending.clear()
        if not changed:
            return
        self.stats.catalog_updates += 1
        for connection in self._connections.values():
            if changed & set(connection.subscriber.types):
                connection.wakeup.set()
        self._notify()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The debounce loop: flush pending publishes once they are quiet (or overdue)."""
        task_status.started()
        while True:
            deadline = self._debouncer.deadline()
            if deadline is None:
                await self._publish_wakeup.wait()
                continue
            if trio.current_time() >= deadline:
                self._debouncer.fired()
                self._flush()
                continue
            with trio.move_on_at(deadline):
                await self._publish_wakeup.wait()

    # ---------------------------------------------------------------------------------- connections

    async def handler(self, ws: trio_websocket.WebSocketConnection, caller: Caller) -> None:
        """Serve one proxy connection until it closes (the control server's ``/v1/xds`` handler)."""
        proxy = self._proxy_id(caller.node or caller.subject)  # a waypoint has no node of its own
        self._serial += 1
        connection = _Connection(Subscriber(proxy, f"{self._instance}.{self._serial}"), _Wakeup())
        self._connections[proxy] = connection
        self.stats.connected += 1
        if self._metrics is not None:
            self._metrics.connected.labels().inc()
        self._notify()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_loop, ws, connection)
                await self._receive_loop(ws, connection)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionClosed:
            pass  # the proxy went away; it gets a full push when it reconnects
        finally:
            del self._connections[proxy]
            self.stats.connected -= 1
            if self._metrics is not None:
                self._metrics.connected.labels().dec()
            self._notify()

    def _proxy_id(self, node: str) -> str:
        """The node name; a second live connection from the same node gets ``node#2`` and so on."""
        if node not in self._connections:
            return node
        n = 2
        while f"{node}#{n}" in self._connections:
            n += 1
        return f"{node}#{n}"

    async def _send_loop(self, ws: trio_websocket.WebSocketConnection, connection: _Connection) -> None:
        while True:
            push = connection.subscriber.next_push(self._catalog)
            if push is None:
                await connection.wakeup.wait()
                continue
            await ws.send_message(encode(push))
            self.stats.pushes += 1
            if self._metrics is not None:
                self._metrics.pushes.labels(push.type).inc()
            self._notify()

    async def _receive_loop(self, ws: trio_websocket.WebSocketConnection, connection: _Connection) -> None:
        subscriber = connection.subscriber
        while True:
            frame = await ws.get_message()
            try:
                message = decode(frame)
                if isinstance(message, Push):
                    raise PushProtocolError("proxies answer pushes, they do not send them", frame="push")
                if isinstance(message, Subscribe):
                    self._check_types(message.types)
                    subscriber.subscribe(message.types)
                else:
                    self._count(subscriber, message, subscriber.on_answer(message))
            except (PushProtocolError, SubscriberProtocolError) as exc:
                await ws.aclose(_POLICY_VIOLATION, _close_reason(str(exc)))
                return
            connection.wakeup.set()
            self._notify()

    def _check_types(self, types: tuple[str, ...]) -> None:
        if self._types is None:
            return
        unknown = sorted(set(types) - self._types)
        if unknown:
            raise PushProtocolError(
                f"unknown resource types {unknown} (this server pushes {sorted(self._types)})",
                frame="subscribe",
            )

    def _count(self, subscriber: Subscriber, answer: Ack | Nack, outcome: AnswerOutcome) -> None:
        type_name = answer.type
        if outcome is AnswerOutcome.ACKED:
            self.stats.acks += 1
            acked = subscriber.acked(type_name)
            if self._metrics is not None and acked is not None:
                elapsed = trio.current_time() - acked.published_at
                self._metrics.convergence.labels(type_name).observe(elapsed)
        elif outcome is AnswerOutcome.NACKED:
            self.stats.nacks += 1
            if self._metrics is not None:
                self._metrics.rejects.labels(type_name).inc()
            error = answer.error if isinstance(answer, Nack) else ""
            _log.warning("proxy rejected a push", proxy=subscriber.proxy, type=type_name, error=error)

    # ---------------------------------------------------------------------------------- status

    def status(self) -> list[ProxyTypeStatus]:
        """proxy-status rows, per connected proxy and subscribed type, sorted."""
        rows = [self._row(row) for conn in self._connections.values() for row in conn.subscriber.status()]
        return sorted(rows, key=lambda row: (row.proxy, row.type))

    def _row(self, row: TypeStatus) -> ProxyTypeStatus:
        published = self._catalog.get(row.type)
        version = published.version if published is not None else None
        return ProxyTypeStatus(
            proxy=row.proxy,
            type=row.type,
            state=sync_state(row, version),
            published_version=version,
            sent_version=row.sent_version,
            sent_nonce=row.sent_nonce,
            acked_version=row.acked_version,
            nack_error=row.nack_error,
        )


def _close_reason(text: str) -> str:
    """WebSocket close reasons are at most 123 bytes of UTF-8."""
    encoded = text.encode()[:120]
    return encoded.decode(errors="ignore")
