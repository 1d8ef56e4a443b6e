"""Backoff: doubling from 0.5 s up to the cap, jitter within its band, reset after a good connection."""

from __future__ import annotations

import random

import pytest

from meshcore.push.backoff import Backoff


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_jitter_only_shortens_a_delay_within_its_band() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(50)]
    assert all(0.8 <= d <= 1.0 for d in delays) and len(set(delays)) > 1


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": 0}, {"initial": 5, "maximum": 1}, {"factor": 0.5}, {"jitter": 1.0}, {"jitter": -0.1}],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(**kwargs)  # type: ignore[arg-type]
