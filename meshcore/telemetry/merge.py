"""Merge several Prometheus text expositions of the same metrics into one, summing equal series.

A multi-worker ztunnel is one proxy to its operator: Prometheus scrapes one ``/metrics`` per node, so
the node's main process adds its workers' counters, gauges and histogram series to its own. Every
sample we expose is additive across workers (connection and byte counters, histogram buckets, sums
and counts, open-connection gauges), so "sum the series with the same name and labels" is the whole
rule. Families keep the order in which they first appear; HELP and TYPE are written once.
"""

from __future__ import annotations

from collections.abc import Sequence

from meshcore.telemetry.metrics import format_value


class _Family:
    def __init__(self) -> None:
        self.header: list[str] = []
        self.samples: dict[str, float] = {}


def _family_name(sample_name: str, known: dict[str, _Family]) -> str:
    """The family a sample belongs to (``x_bucket``/``x_sum``/``x_count`` belong to histogram ``x``)."""
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in known:
            return sample_name[: -len(suffix)]
    return sample_name


def _split_sample(line: str) -> tuple[str, float]:
    """``name{labels} value`` → (``name{labels}``, value); label values may contain spaces."""
    series, _, value = line.rpartition(" ")
    return series, float(value)


def merge_expositions(texts: Sequence[str]) -> str:
    """One exposition in which each series' value is the sum of its values in ``texts``."""
    families: dict[str, _Family] = {}
    for text in texts:
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = families.setdefault(parts[2], _Family())
                    if not any(h.split(" ", 3)[1] == parts[1] for h in family.header):
                        family.header.append(line)
                continue
            series, value = _split_sample(line)
            name = series.split("{", 1)[0]
            family = families.setdefault(_family_name(name, families), _Family())
            family.samples[series] = family.samples.get(series, 0.0) + value
    lines: list[str] = []
    for family in families.values():
        lines.extend(family.header)
        lines.extend(f"{series} {format_value(value)}" for series, value in family.samples.items())
    return "\n".join(lines) + "\n" if lines else ""
