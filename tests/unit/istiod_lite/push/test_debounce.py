"""Debouncer: act after a quiet period, never later than the maximum delay."""

from __future__ import annotations

import pytest

from istiod_lite.push.debounce import Debouncer


@pytest.mark.parametrize(
    ("changes", "expected_deadline"),
    [
        ([], None),
        ([10.0], 10.1),
        ([10.0, 10.05, 10.08], 10.18),  # each change restarts the quiet period
        ([10.0 + 0.05 * i for i in range(40)], 11.0),  # a steady trickle is cut off by max_delay
    ],
)
def test_deadline(changes: list[float], expected_deadline: float | None) -> None:
    debouncer = Debouncer(quiet=0.1, max_delay=1.0)
    for now in changes:
        debouncer.changed(now)
    deadline = debouncer.deadline()
    assert deadline == pytest.approx(expected_deadline) if expected_deadline is not None else deadline is None
    assert debouncer.pending == bool(changes)


def test_due_and_fired() -> None:
    debouncer = Debouncer(quiet=0.1, max_delay=1.0)
    debouncer.changed(5.0)
    assert not debouncer.due(5.05) and debouncer.due(5.1)
    debouncer.fired()
    assert not debouncer.pending and not debouncer.due(100.0)
    debouncer.changed(7.0)
    assert debouncer.deadline() == pytest.approx(7.1)  # a new burst starts its own max_delay window


@pytest.mark.parametrize(("quiet", "max_delay"), [(-0.1, 1.0), (2.0, 1.0)])
def test_nonsense_settings_are_refused(quiet: float, max_delay: float) -> None:
    with pytest.raises(ValueError, match="quiet <= max_delay"):
        Debouncer(quiet=quiet, max_delay=max_delay)
