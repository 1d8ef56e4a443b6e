"""The proxy side of one push connection, sans-IO: a push in, the applier called, an ACK or NACK out.

The applier owns the proxy's state and must apply a push transactionally: validate everything, then
commit, or raise and leave the last good state untouched. Any exception it raises becomes a NACK carrying
the error text, so istiod_lite's proxy-status shows *why* a proxy runs on old config. A delta that
arrives before this connection's full state is rejected the same way: applying it on top of whatever
the proxy held before the reconnect could silently keep resources istiod_lite has since deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from meshcore.push.protocol import JSON, Ack, Nack, Push, Subscribe


class Applier(Protocol):
    def apply(self, type_name: str, upserts: dict[str, JSON], removed: list[str], full: bool) -> None:
        """Apply one push of ``type_name`` or raise (the state must then be unchanged)."""


@attrs.define
class ClientSession:
    """Per-connection sync state plus what outlives connections (the versions in force)."""

    types: tuple[str, ...]
    versions: dict[str, str] = attrs.field(factory=dict)
    """The version in force per type (survives reconnects: it is what the proxy is serving)."""
    synced_types: set[str] = attrs.field(factory=set)
    """Types whose full state was applied on the current connection."""
    last_error: str | None = None
    applied: int = 0
    rejected: int = 0

    @classmethod
    def for_types(cls, types: Iterable[str]) -> ClientSession:
        unique = tuple(dict.fromkeys(types))
        if not unique or not all(isinstance(t, str) and t for t in unique):
            raise ValueError(f"subscribe to at least one non-empty type name, got {unique!r}")
        return cls(types=unique)

    @property
    def synced(self) -> bool:
        return self.synced_types >= set(self.types)

    def connected(self) -> Subscribe:
        """A new connection starts: nothing is synced on it yet; returns the subscribe to send."""
        self.synced_types.clear()
        return Subscribe(types=self.types)

    def handle(self, push: Push, applier: Applier) -> Ack | Nack:
        """Apply ``push`` through ``applier``; the answer to send back."""
        if push.type not in self.types:
            return self._reject(
                push, f"not subscribed to type {push.type!r} (subscribed: {list(self.types)})"
            )
        if not push.full and push.type not in self.synced_types:
            return self._reject(
                push, f"delta push for {push.type!r} before its full state on this connection"
            )
        try:
            applier.apply(push.type, push.upserts(), list(push.removed), push.full)
        except Exception as exc:  # the applier's contract: raising means rejected, state unchanged
            return self._reject(push, f"{type(exc).__name__}: {exc}")
        self.versions[push.type] = push.version
        if push.full:
            self.synced_types.add(push.type)
        self.applied += 1
        return Ack(type=push.type, nonce=push.nonce, version=push.version)

    def _reject(self, push: Push, error: str) -> Nack:
        self.last_error = error
        self.rejected += 1
        return Nack(type=push.type, nonce=push.nonce, error=error)
