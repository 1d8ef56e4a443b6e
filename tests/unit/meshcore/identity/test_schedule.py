"""The refresh/backoff core, table-driven: no trio, no clock — times are plain numbers."""

from __future__ import annotations

import pytest

from meshcore.identity.schedule import CertState, Priority, Schedule, backoff, refresh_at

A, B, C = (f"spiffe://cluster.local/ns/prod/sa/{n}" for n in "abc")


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (8, 64.0), (9, 128.0), (10, 150.0), (30, 150.0)],
)
def test_backoff_doubles_from_half_a_second_to_150(failures: int, delay: float) -> None:
    assert backoff(failures) == delay


def test_refresh_at_half_life() -> None:
    assert refresh_at(1000.0, 1000.0 + 86400) == 1000.0 + 43200


def test_new_identity_is_due_at_once_and_initializing() -> None:
    s = Schedule()
    s.add_holder(A, "pod-1", now=10.0)
    assert s.state(A, 10.0) is CertState.INITIALIZING
    assert s.next_wakeup() == 10.0
    assert s.start_due(10.0) == [A]
    assert s.start_due(10.0) == []  # in flight: not started twice
    assert s.state(A, 10.0) is CertState.INITIALIZING


@pytest.mark.parametrize(
    ("events", "now", "state"),
    [
        ([("ok", 0.0, -120.0, 3600.0)], 100.0, CertState.AVAILABLE),
        ([("fail", 0.0, 0, 0)], 1.0, CertState.UNAVAILABLE),
        ([("ok", 0.0, -120.0, 3600.0), ("fail", 1740.0, 0, 0)], 3599.0, CertState.AVAILABLE),  # old cert kept
        ([("ok", 0.0, -120.0, 3600.0), ("fail", 1740.0, 0, 0)], 3600.0, CertState.UNAVAILABLE),  # expired
        ([("ok", 0.0, -120.0, 3600.0)], 3600.0, CertState.UNAVAILABLE),  # expired, refresh never ran
        ([("ok", 0.0, 50.0, 3600.0)], 10.0, CertState.INITIALIZING),  # NotBefore still ahead
        ([("fail", 0.0, 0, 0), ("ok", 0.5, 0.0, 3600.0)], 1.0, CertState.AVAILABLE),
    ],
)
def test_state_table(events: list[tuple[str, float, float, float]], now: float, state: CertState) -> None:
    """Events are (outcome, at, not_before, not_after) of successive fetches."""
    s = Schedule()
    s.add_holder(A, "pod", 0.0)
    for outcome, at, nb, na in events:
        s.start_due(at)
        if outcome == "ok":
            s.succeeded(A, at, nb, na)
        else:
            s.failed(A, at, "CA unreachable")
    assert s.state(A, now) is state


def test_success_schedules_half_life_and_failures_back_off() -> None:
    s = Schedule()
    s.add_holder(A, "pod", 0.0)
    s.start_due(0.0)
    s.succeeded(A, 0.0, -120.0, 3600.0)
    assert s.next_wakeup() == 1740.0
    s.start_due(1740.0)
    attempts = []
    now = 1740.0
    for _ in range(12):
        s.failed(A, now, "down")
        now = s.entries[A].next_attempt
        attempts.append(now)
        assert s.start_due(now) == [A]
    deltas = [round(b - a, 3) for a, b in zip([1740.0, *attempts], attempts, strict=False)]
    assert deltas == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 150.0, 150.0, 150.0]
    s.succeeded(A, now, now - 120, now + 3600)
    assert s.entries[A].failures == 0 and s.entries[A].last_error == ""


def test_requests_jump_the_queue_within_the_concurrency_limit() -> None:
    s = Schedule(concurrency=2)
    for ident in (A, B):
        s.add_holder(ident, "pod", 0.0)
    s.request(C, 0.0)
    assert s.entries[C].priority is Priority.REQUEST
    assert s.start_due(0.0) == [C, A]  # the waiting connection first, then warmups by name
    assert s.next_wakeup() is None  # all slots busy: a finishing fetch wakes the driver
    s.succeeded(C, 1.0, 0.0, 3600.0)
    assert s.start_due(1.0) == [B]


def test_request_retries_an_identity_in_backoff_at_once() -> None:
    s = Schedule()
    s.add_holder(A, "pod", 0.0)
    s.start_due(0.0)
    for _ in range(5):
        s.failed(A, 0.0, "down")
    assert s.entries[A].next_attempt == 8.0
    s.request(A, 1.0)
    assert s.start_due(1.0) == [A]


def test_request_for_a_valid_certificate_changes_nothing() -> None:
    s = Schedule()
    s.add_holder(A, "pod", 0.0)
    s.start_due(0.0)
    s.succeeded(A, 0.0, 0.0, 3600.0)
    s.request(A, 10.0)
    assert s.entries[A].priority is Priority.WARMUP and s.start_due(10.0) == []


def test_forgotten_with_the_last_holder() -> None:
    s = Schedule()
    s.add_holder(A, "pod-1", 0.0)
    s.add_holder(A, "pod-2", 0.0)
    assert s.remove_holder(A, "pod-1") is False
    assert s.remove_holder(A, "pod-2") is True
    assert A not in s.entries and s.state(A, 0.0) is None
    assert s.remove_holder(A, "pod-2") is False
    s.succeeded(A, 0.0, 0.0, 10.0)  # a fetch finishing after the forget is ignored
    assert A not in s.entries


def test_on_demand_identity_is_dropped_at_refresh_unless_claimed() -> None:
    s = Schedule()
    s.request(A, 0.0)
    s.request(B, 0.0)
    assert s.start_due(0.0) == [A, B]
    s.succeeded(A, 0.0, 0.0, 100.0)
    s.succeeded(B, 0.0, 0.0, 100.0)
    s.add_holder(B, "pod", 10.0)  # a workload claims B in the meantime
    assert s.start_due(50.0) == [B]
    assert A not in s.entries
