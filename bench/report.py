"""Ratios and the markdown table of a bench run (pure: a result document in, text out)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: (metric, label, which way is better) in the order the table shows them.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("bulk_MBps", "bulk throughput, one stream (MB/s)", "higher"),
    ("rps_64c", "requests/s, 64 connections, closed loop", "higher"),
    ("p50_ms_2000rps_4c", "p50 ms at 2,000 req/s, 4 connections", "lower"),
    ("p99_ms_2000rps_4c", "p99 ms at 2,000 req/s, 4 connections", "lower"),
    ("p50_ms_2000rps_64c", "p50 ms at 2,000 req/s, 64 connections", "lower"),
    ("p99_ms_2000rps_64c", "p99 ms at 2,000 req/s, 64 connections", "lower"),
    ("new_conn_per_s", "new connections/s (one request each)", "higher"),
    ("cpu_s_per_GB", "proxy CPU seconds per GB", "lower"),
    ("cpu_s_per_10k_req", "proxy CPU seconds per 10k requests", "lower"),
    ("peak_rss_MiB", "peak RSS of the proxies (MiB)", "lower"),
    ("errors", "errors + non-2xx per run (median)", "lower"),
    ("bulk_failures", "failed bulk streams (count)", "lower"),
)


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def ratios(medians: Mapping[str, Mapping[str, float]], counterpart: Mapping[str, str]) -> dict[str, Any]:
    """scenario → metric → {"vs_direct": x, "vs_envoy": y}: our figure divided by the other's."""
    out: dict[str, Any] = {}
    direct = medians.get("direct", {})
    for scenario, figures in medians.items():
        envoy = medians.get(counterpart.get(scenario, ""), {})
        out[scenario] = {
            metric: {"vs_direct": _ratio(value, direct.get(metric)), "vs_envoy": _ratio(value, envoy.get(metric))}
            for metric, value in figures.items()
        }
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render_markdown(result: Mapping[str, Any]) -> str:
    medians: Mapping[str, Mapping[str, float]] = result["medians"]
    rates: Mapping[str, Mapping[str, Mapping[str, float | None]]] = result["ratios"]
    scenarios = list(medians)
    machine, profile = result["machine"], result["profile"]
    lines = [
        f"# Mesh benchmark {result['started']}",
        "",
        f"{machine['cpus']} CPUs ({machine['cpu']}), kernel {machine['kernel']}, load average at start "
        f"{machine['load_avg_start'][0]:.2f}, at end {machine['load_avg_end'][0]:.2f}. "
        f"{profile['rounds']} interleaved rounds, {profile['seconds']} s per load run; medians; "
        f"{result.get('wall_seconds', '?')} s in all. "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
        "",
        "Each cell: median, then xdirect / xEnvoy counterpart (our figure divided by theirs; "
        "for \"higher\" rows above 1 is better for us, for \"lower\" rows below 1 is).",
        "",
        "| metric | better | " + " | ".join(scenarios) + " |",
        "|---|---|" + "---|" * len(scenarios),
    ]
    for metric, label, better in METRICS:
        cells = []
        for scenario in scenarios:
            value = medians[scenario].get(metric)
            if value is None:
                cells.append("")
                continue
            rate = rates.get(scenario, {}).get(metric, {})
            extra = [f"x{_fmt(rate.get(key))}" for key in ("vs_direct", "vs_envoy")
                     if rate.get(key) is not None and scenario not in ("direct",)]
            cells.append(_fmt(value) + (f" ({' / '.join(extra)})" if extra else ""))
        if any(cells):
            lines.append(f"| {label} | {better} | " + " | ".join(cells) + " |")
    lines += ["", "Memory:", ""]
    for name, rss in result.get("idle_rss_MiB", {}).items():
        lines.append(f"- idle RSS, {name}: {rss:.1f} MiB")
    idle_key = f"rss_MiB_{profile['idle_tunnels']}_idle"
    for scenario in scenarios:
        value = medians[scenario].get(idle_key)
        if value is not None:
            failed = medians[scenario].get("idle_tunnels_failed", 0)
            lines.append(f"- {scenario}: {value:.0f} MiB with {profile['idle_tunnels']:,} idle tunnels open "
                         f"({failed:.0f} failed to open)")
    return "\n".join(lines) + "\n"
