"""No process of a mesh outlives its `meshctl up`, even when the runner is SIGKILLed.

Every process the runner starts (and everything those start: ztunnel workers, ``ip netns exec``
children, shells) inherits ``MESHCTL_STATE_DIR=<absolute state dir>`` in its environment, which
``/proc/PID/environ`` shows for the process's whole life. That marks exactly the processes this mesh
started, so cleaning up never needs a name match (``pkill -f``) and never touches anything else.

Two mechanisms use the mark:

* :func:`reap_leftovers` at startup, under the state directory's lock: any marked process is then a
  leftover of an earlier runner that died without draining (the lock guarantees no live runner owns it);
* a watchdog (``python -m meshctl.runner.leftovers --state-dir DIR``) started by the runner with a pipe
  on its stdin. The runner holds the pipe's only write end, so the watchdog reads EOF when the runner
  exits for any reason — after a normal drain there is nothing left to find; after a SIGKILL it
  terminates the orphans at once. ``PR_SET_PDEATHSIG`` cannot do this: it fires when the forking
  *thread* exits, and trio starts processes from reusable worker threads.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import trio

MARKER_ENV = "MESHCTL_STATE_DIR"
GRACE_SECONDS = 3.0


def marker(state_dir: Path) -> str:
    return str(state_dir.resolve())


def _environ(pid: int, proc: Path) -> bytes:
    try:
        return (proc / str(pid) / "environ").read_bytes()
    except OSError:  # gone, a zombie, or not ours to read
        return b""


def _ancestors(pid: int, proc: Path) -> set[int]:
    """``pid`` and its parents up to init: never signal the process asking, nor what started it."""
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return seen


def find_leftovers(state_dir: Path, *, proc: Path = Path("/proc")) -> list[int]:
    """PIDs of live processes marked with ``state_dir`` (excluding this process and its ancestors)."""
    wanted = f"{MARKER_ENV}={marker(state_dir)}".encode()
    excluded = _ancestors(os.getpid(), proc)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in excluded:
            continue
        if wanted in _environ(int(entry.name), proc).split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _alive(pids: Iterable[int], proc: Path) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def terminate(pids: Sequence[int], *, grace: float = GRACE_SECONDS, proc: Path = Path("/proc")) -> None:
    """SIGTERM, up to ``grace`` seconds to exit, then SIGKILL (blocking: the watchdog has nothing else to do)."""
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while (alive := _alive(pids, proc)) and time.monotonic() < deadline:
        time.sleep(0.05)
    _signal_all(alive, signal.SIGKILL)


async def reap_leftovers(state_dir: Path, *, grace: float = GRACE_SECONDS) -> list[int]:
    """Stop what an earlier runner of ``state_dir`` left running; returns their PIDs."""
    pids = await trio.to_thread.run_sync(find_leftovers, state_dir)
    if pids:
        await trio.to_thread.run_sync(lambda: terminate(pids, grace=grace))
    return pids


async def start_watchdog(state_dir: Path) -> trio.Process:
    """The watchdog process for this runner; keep the returned process (its stdin is the lifeline)."""
    return await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshctl.runner.leftovers", "--state-dir", str(state_dir)],
        stdin=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C to the runner's terminal must not take the watchdog first
    )


def watch(state_dir: Path) -> int:
    """Block until stdin reaches EOF (the runner is gone), then stop what it left behind."""
    while os.read(sys.stdin.fileno(), 4096):
        pass
    leftovers = find_leftovers(state_dir)
    if leftovers:
        print(f"meshctl: the runner of {state_dir} exited; stopping {len(leftovers)} process(es) it left: "
              f"{' '.join(map(str, leftovers))}", file=sys.stderr)
        terminate(leftovers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshctl.runner.leftovers",
                                     description="Stop a mesh's processes once its runner has exited.")
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only EOF on stdin ends the watch
    return watch(args.state_dir)


if __name__ == "__main__":
    sys.exit(main())
