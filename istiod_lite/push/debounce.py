"""When to act on a burst of changes: after a quiet period, but never later than a maximum delay.

Editing a directory of YAML or applying a multi-document file produces a burst of store changes; pushing
after each one would send proxies a string of half-finished states. Istio debounces (100 ms quiet,
10 s max); the maximum bounds how long a constant trickle of changes can hold back a push. Sans-IO: the
caller passes the clock reading in and sleeps until :meth:`Debouncer.deadline` itself.
"""

from __future__ import annotations

import attrs


@attrs.define
class Debouncer:
    quiet: float = 0.1
    max_delay: float = 1.0
    _first: float | None = None
    _last: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.quiet < 0 or self.max_delay < self.quiet:
            raise ValueError(
                f"need 0 <= quiet <= max_delay, got quiet={self.quiet} max_delay={self.max_delay}"
            )

    @property
    def pending(self) -> bool:
        return self._first is not None

    def changed(self, now: float) -> None:
        """Record a change seen at ``now``."""
        if self._first is None:
            self._first = now
        self._last = now

    def deadline(self) -> float | None:
        """The time at which the pending changes are due; None if nothing is pending."""
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_delay)

    def due(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def fired(self) -> None:
        """The pending changes were acted on; start afresh."""
        self._first = self._last = None
