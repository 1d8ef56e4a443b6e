"""Reconnect delays: exponential with a cap, optionally jittered, reset once a connection proves good.

Sans-IO: the caller sleeps. Jitter comes from an injected ``random.Random`` so a fleet of proxies that
lost istiod_lite at the same moment does not reconnect in lockstep, while tests stay deterministic.
"""

from __future__ import annotations

import random

import attrs


@attrs.define
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.0
    """Fraction of each delay that is randomised away (0.2: the delay lies in [0.8 d, d])."""
    rng: random.Random = attrs.field(factory=random.Random)
    _attempt: int = 0

    def __attrs_post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum) or self.factor < 1 or not (0 <= self.jitter < 1):
            raise ValueError(
                "backoff needs 0 < initial <= maximum, factor >= 1 and 0 <= jitter < 1; got "
                f"initial={self.initial} maximum={self.maximum} factor={self.factor} jitter={self.jitter}"
            )

    @property
    def attempt(self) -> int:
        return self._attempt

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one failed attempt."""
        delay = min(self.maximum, self.initial * self.factor**self._attempt)
        self._attempt += 1
        if self.jitter:
            delay *= 1 - self.jitter * self.rng.random()
        return delay

    def reset(self) -> None:
        self._attempt = 0
