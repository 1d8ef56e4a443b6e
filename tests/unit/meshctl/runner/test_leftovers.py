"""Finding and stopping the processes a mesh's runner left behind, by the mark in their environment."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshctl.runner.leftovers import MARKER_ENV, find_leftovers, marker, terminate


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    grandchildren: list[int] = []
    yield started
    for proc in started:
        grandchildren += children(proc.pid)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    for pid in grandchildren:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start(processes: list[subprocess.Popen[bytes]], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``sh`` with a ``sleep`` child: the mark must reach what children start, too."""
    proc = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], env={**os.environ, **env})
    processes.append(proc)
    for _ in range(250):
        if children(proc.pid):
            return proc
        time.sleep(0.02)
    raise AssertionError("the shell never started its child")


def test_only_processes_marked_with_this_state_dir_are_found(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    ours = start(processes, {MARKER_ENV: marker(tmp_path / "mesh")})
    other = start(processes, {MARKER_ENV: marker(tmp_path / "another-mesh")})
    start(processes, {})
    found = find_leftovers(tmp_path / "mesh")
    assert ours.pid in found and set(children(ours.pid)) <= set(found)
    assert other.pid not in found
    assert os.getpid() not in found


def test_terminate_stops_them_and_the_state_dir_is_clean_afterwards(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "mesh"
    proc = start(processes, {MARKER_ENV: marker(state)})
    (grandchild,) = children(proc.pid)
    assert grandchild in find_leftovers(state)
    terminate(find_leftovers(state), grace=2)
    assert proc.wait(timeout=5) != 0
    assert find_leftovers(state) == []  # the shell's child was marked and found, so it is gone too
    assert grandchild not in find_leftovers(state)


def test_the_watchdog_stops_marked_processes_when_its_stdin_closes(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    state = tmp_path / "mesh"
    orphan = start(processes, {MARKER_ENV: marker(state)})
    watchdog = subprocess.Popen([sys.executable, "-m", "meshctl.runner.leftovers", "--state-dir", str(state)],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert watchdog.stdin is not None and watchdog.stderr is not None
    assert orphan.poll() is None
    watchdog.stdin.close()  # what the kernel does when the runner dies, SIGKILL included
    assert watchdog.wait(timeout=15) == 0
    assert orphan.wait(timeout=5) != 0
    assert b"stopping" in watchdog.stderr.read()
    watchdog.stderr.close()
