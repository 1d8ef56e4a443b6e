"""The proxy-status verdict per proxy and type, as ``meshctl proxy-status`` shows it (Istio's words).

SYNCED: the proxy ACKed the newest published version. NACKED: the proxy rejected the newest version it
was sent, and nothing newer has reached it since, so it runs on its last good state. STALE: anything
else — a push is in flight, or the proxy has not caught up yet.
"""

from __future__ import annotations

import enum

from istiod_lite.push.subscriber import TypeStatus


class SyncState(enum.StrEnum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"


def sync_state(status: TypeStatus, published_version: str | None) -> SyncState:
    """The verdict for one row, given the version istiod_lite currently publishes for its type."""
    if published_version is not None and status.acked_version == published_version:
        return SyncState.SYNCED
    rejected_latest = status.nack_version is not None and status.nack_version == status.sent_version
    if rejected_latest and not status.in_flight:
        return SyncState.NACKED
    return SyncState.STALE
