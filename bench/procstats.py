"""CPU time and memory of processes, read from /proc (Linux): what each proxy costs during a workload."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds consumed so far by ``pids`` (a process that is gone counts 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pids: Iterable[int]) -> float:
    """Resident memory of ``pids`` now, summed, in MiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids) / 1024


def peak_rss_mib(pids: Iterable[int]) -> float:
    """High-water resident memory (VmHWM) of ``pids`` since they started, summed, in MiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in pids) / 1024


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (a ztunnel's workers, for example)."""
    found = [pid]
    index = 0
    while index < len(found):
        current = found[index]
        index += 1
        try:
            tasks = Path(f"/proc/{current}/task").iterdir()
            for task in tasks:
                children = (task / "children").read_text().split()
                found.extend(int(child) for child in children)
        except OSError:
            continue
    return found
