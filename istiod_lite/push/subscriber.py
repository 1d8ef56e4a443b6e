"""One connected proxy's push state, per subscribed type: plain data in, pushes and outcomes out.

Flow control is one push in flight per type: the next push of a type is built only once the previous
one was ACKed or NACKed, and it is always built from the *newest* published snapshot. That makes the
per-subscriber queue bounded (at most one pending state per type) and coalescing (a slow proxy that
missed five versions gets one delta to the newest), and it lets the delta base be exact: after an ACK
the proxy holds what was sent; after a NACK it still holds the last ACKed state, so the next delta is
computed from that (delta xDS keeps the last good state on NACK in the same way). A NACKed version is
not resent; the next *new* version is.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import attrs

from istiod_lite.push.delta import Snapshot, compute_delta
from meshcore.errors import MeshError
from meshcore.push.protocol import Ack, Nack, Push, make_push


class SubscriberProtocolError(MeshError):
    """A proxy answered in a way that cannot belong to any push it was sent."""

    hint = "proxy {proxy} must answer each push with the push's own type, nonce and version"


@attrs.frozen
class Published:
    """The newest state of one type, as istiod_lite published it."""

    version: str
    resources: Snapshot
    published_at: float = 0.0
    """When the catalog took this version (the shell's clock), for convergence time."""


@attrs.frozen
class _InFlight:
    nonce: str
    published: Published


@attrs.define
class TypeState:
    """What one proxy was sent of one type and what it answered."""

    base: Published | None = None
    """The state the proxy holds as far as we know (last ACKed on this connection); None before any ACK."""
    in_flight: _InFlight | None = None
    sent_version: str | None = None
    sent_nonce: str | None = None
    acked_version: str | None = None
    nack_version: str | None = None
    nack_error: str | None = None


class AnswerOutcome(enum.Enum):
    ACKED = "acked"
    NACKED = "nacked"
    STALE = "stale"
    """The answer names a nonce that is no longer in flight (e.g. from before a resubscribe); ignored."""


@attrs.frozen
class TypeStatus:
    """One row of proxy-status: see :func:`istiod_lite.push.status.sync_state` for its verdict."""

    proxy: str
    type: str
    sent_version: str | None
    sent_nonce: str | None
    acked_version: str | None
    nack_version: str | None
    nack_error: str | None
    in_flight: bool


class Subscriber:
    """The push state machine of one proxy connection (no I/O; the server's connection task drives it)."""

    def __init__(self, proxy: str, nonce_prefix: str) -> None:
        self.proxy = proxy
        self._nonce_prefix = nonce_prefix
        self._nonces = 0
        self._types: dict[str, TypeState] = {}

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self._types)

    def subscribe(self, types: Iterable[str]) -> tuple[str, ...]:
        """Add ``types``; returns the ones that are new (each gets a full push once published)."""
        added = tuple(dict.fromkeys(t for t in types if t not in self._types))
        for type_name in added:
            self._types[type_name] = TypeState()
        return added

    def next_push(self, catalog: Mapping[str, Published]) -> Push | None:
        """The next push to send, or None when every type is in flight or up to date."""
        for type_name, state in self._types.items():
            published = catalog.get(type_name)
            if published is None or state.in_flight is not None:
                continue
            if state.base is not None and state.base.version == published.version:
                continue
            if state.nack_version == published.version:
                continue  # the proxy rejected exactly this; wait for a new version
            delta = compute_delta(None if state.base is None else state.base.resources, published.resources)
            if delta.empty:  # same content under another version: nothing to tell the proxy
                state.base = published
                continue
            self._nonces += 1
            nonce = f"{self._nonce_prefix}-{self._nonces}"
            state.in_flight = _InFlight(nonce=nonce, published=published)
            state.sent_version, state.sent_nonce = published.version, nonce
            return make_push(
                type_name, published.version, nonce, delta.upserts, delta.removed, full=delta.full
            )
        return None

    def on_answer(self, answer: Ack | Nack) -> AnswerOutcome:
        """Record the proxy's ACK or NACK; an answer to a push no longer in flight is stale."""
        state = self._types.get(answer.type)
        if state is None:
            raise SubscriberProtocolError(
                f"answer for type {answer.type!r}, which this proxy never subscribed to", proxy=self.proxy
            )
        in_flight = state.in_flight
        if in_flight is None or in_flight.nonce != answer.nonce:
            return AnswerOutcome.STALE
        state.in_flight = None
        if isinstance(answer, Nack):
            state.nack_version, state.nack_error = in_flight.published.version, answer.error
            return AnswerOutcome.NACKED
        if answer.version != in_flight.published.version:
            raise SubscriberProtocolError(
                f"ACK of nonce {answer.nonce} names version {answer.version!r}, "
                f"but that push carried {in_flight.published.version!r}",
                proxy=self.proxy,
            )
        state.base = in_flight.published
        state.acked_version = in_flight.published.version
        state.nack_version = state.nack_error = None
        return AnswerOutcome.ACKED

    def acked(self, type_name: str) -> Published | None:
        """The state of ``type_name`` the proxy last ACKed on this connection."""
        state = self._types.get(type_name)
        return state.base if state is not None else None

    def status(self) -> list[TypeStatus]:
        return [
            TypeStatus(
                proxy=self.proxy,
                type=type_name,
                sent_version=state.sent_version,
                sent_nonce=state.sent_nonce,
                acked_version=state.acked_version,
                nack_version=state.nack_version,
                nack_error=state.nack_error,
                in_flight=state.in_flight is not None,
            )
            for type_name, state in self._types.items()
        ]
