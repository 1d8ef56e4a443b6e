"""When to ask for which certificate: the certificate manager's I/O-free core.

Plain data in, decisions out — no clock, no sockets. All times are wall-clock seconds since the epoch
(certificate validity is wall-clock), supplied by the caller.

Rules (DESIGN §3, following ztunnel's secret manager):

* an identity is *tracked* while at least one local workload holds it; it is fetched as soon as it
  appears and forgotten when its last holder leaves;
* a fetched certificate is refreshed at half-life: ``not_before + (not_after - not_before) / 2``;
* a failed fetch is retried after an exponential backoff per identity, 0.5 s doubling up to 150 s;
  a success resets it;
* the previous certificate stays in use while it is still valid, whatever the refresh attempts do;
* state: **Initializing** until the first outcome, **Available** while a valid certificate is held,
  **Unavailable** once a fetch failed and no valid certificate is held (in particular after expiry);
* a connection waiting for a certificate asks with priority: it is handed out before prefetches, and
  an identity in backoff without a valid certificate is retried at once for it;
* at most ``concurrency`` fetches run at a time; the rest wait, highest priority first.
"""

from __future__ import annotations

import enum

import attrs

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 150.0


class CertState(enum.Enum):
    INITIALIZING = "Initializing"
    AVAILABLE = "Available"
    UNAVAILABLE = "Unavailable"


class Priority(enum.IntEnum):
    """Who is waiting: a prefetch can wait; a connection being set up should not."""

    WARMUP = 0
    REQUEST = 1


def backoff(failures: int, *, initial: float = INITIAL_BACKOFF, maximum: float = MAX_BACKOFF) -> float:
    """Delay before retry number ``failures`` (1 → 0.5 s, 2 → 1 s, … capped at 150 s)."""
    if failures <= 0:
        return 0.0
    return float(min(initial * 2 ** (failures - 1), maximum))


def refresh_at(not_before: float, not_after: float) -> float:
    """Half-life of a certificate."""
    return not_before + (not_after - not_before) / 2


@attrs.define
class Entry:
    """What the schedule knows about one identity."""

    holders: set[str] = attrs.field(factory=set)
    valid_from: float | None = None
    valid_until: float | None = None
    next_attempt: float = 0.0
    failures: int = 0
    attempted: bool = False
    in_flight: bool = False
    priority: Priority = Priority.WARMUP
    last_error: str = ""

    def has_valid(self, now: float) -> bool:
        return (
            self.valid_from is not None
            and self.valid_until is not None
            and self.valid_from <= now < self.valid_until
        )


@attrs.define
class Schedule:
    """The decisions for every identity of one node proxy."""

    concurrency: int = 8
    initial_backoff: float = INITIAL_BACKOFF
    max_backoff: float = MAX_BACKOFF
    entries: dict[str, Entry] = attrs.field(factory=dict)

    # ---- inputs -------------------------------------------------------------------------------

    def add_holder(self, identity: str, holder: str, now: float) -> None:
        """A local workload with this identity appeared: track it (fetch now if new)."""
        entry = self.entries.get(identity)
        if entry is None:
            entry = self.entries[identity] = Entry(next_attempt=now)
        entry.holders.add(holder)

    def remove_holder(self, identity: str, holder: str) -> bool:
        """A workload left; returns True when the identity was forgotten (no holder remains)."""
        entry = self.entries.get(identity)
        if entry is None:
            return False
        entry.holders.discard(holder)
        if entry.holders:
            return False
        del self.entries[identity]
        return True

    def request(self, identity: str, now: float) -> None:
        """A connection waits for this identity's certificate: raise its priority, retry if needed.

        An identity nobody tracks is fetched once for the waiter and dropped at its next refresh
        unless a workload claims it by then.
        """
        entry = self.entries.get(identity)
        if entry is None:
            entry = self.entries[identity] = Entry(next_attempt=now)
        if entry.has_valid(now):
            return
        entry.priority = Priority.REQUEST
        if not entry.in_flight:
            entry.next_attempt = min(entry.next_attempt, now)

    def succeeded(self, identity: str, now: float, valid_from: float, valid_until: float) -> None:
        entry = self.entries.get(identity)
        if entry is None:  # forgotten while the fetch ran
            return
        entry.in_flight = False
        entry.attempted = True
        entry.valid_from, entry.valid_until = valid_from, valid_until
        entry.failures = 0
        entry.last_error = ""
        entry.priority = Priority.WARMUP
        entry.next_attempt = max(refresh_at(valid_from, valid_until), now)

    def failed(self, identity: str, now: float, error: str) -> None:
        entry = self.entries.get(identity)
        if entry is None:
            return
        entry.in_flight = False
        entry.attempted = True
        entry.failures += 1
        entry.last_error = error
        entry.priority = Priority.WARMUP  # a waiter got this outcome; a new waiter asks again
        entry.next_attempt = now + backoff(
            entry.failures, initial=self.initial_backoff, maximum=self.max_backoff
        )

    # ---- decisions ----------------------------------------------------------------------------

    def start_due(self, now: float) -> list[str]:
        """Identities to fetch now (marked in flight), highest priority first, within the concurrency.

        Also drops untracked identities (fetched on demand) whose next attempt came due with nobody
        waiting: no workload holds them, so there is nothing to refresh them for.
        """
        for identity, entry in list(self.entries.items()):
            if (
                not entry.holders
                and not entry.in_flight
                and entry.attempted
                and entry.priority is Priority.WARMUP
                and entry.next_attempt <= now
            ):
                del self.entries[identity]
        free = self.concurrency - sum(1 for e in self.entries.values() if e.in_flight)
        due = [(i, e) for i, e in self.entries.items() if not e.in_flight and e.next_attempt <= now]
        due.sort(key=lambda item: (-item[1].priority, item[1].next_attempt, item[0]))
        started = []
        for identity, entry in due[: max(free, 0)]:
            entry.in_flight = True
            started.append(identity)
        return started

    def next_wakeup(self) -> float | None:
        """Earliest time something becomes due; None when nothing waits or every fetch slot is busy
        (a finishing fetch is then what wakes the driver)."""
        if sum(1 for e in self.entries.values() if e.in_flight) >= self.concurrency:
            return None
        times = [e.next_attempt for e in self.entries.values() if not e.in_flight]
        return min(times) if times else None

    def state(self, identity: str, now: float) -> CertState | None:
        entry = self.entries.get(identity)
        if entry is None:
            return None
        if entry.has_valid(now):
            return CertState.AVAILABLE
        if not entry.attempted:
            return CertState.INITIALIZING
        if entry.failures == 0 and entry.valid_until is not None and now < entry.valid_until:
            return CertState.INITIALIZING  # issued with a NotBefore still ahead (skewed clocks)
        return CertState.UNAVAILABLE
