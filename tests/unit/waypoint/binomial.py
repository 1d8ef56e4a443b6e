"""The acceptance band for statistical tests of random routing/fault decisions."""

from __future__ import annotations

import math

Z_999 = 3.2905  # two-sided 99.9 % normal quantile


def interval_999(n: int, p: float) -> tuple[float, float]:
    """Counts a Binomial(n, p) lands in with 99.9 % probability (normal approximation, n·p ≫ 10)."""
    mean = n * p
    half = Z_999 * math.sqrt(n * p * (1 - p))
    return mean - half, mean + half
