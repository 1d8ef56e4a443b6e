"""One `meshctl up` per state directory.

A second runner on the same state directory would fight over addresses, ports and child processes,
so the first one holds an exclusive ``flock`` on ``<state>/up.lock`` for its lifetime and writes its
PID there; a second gets :class:`StateDirBusy` naming that PID. The kernel drops the lock when the
process dies, so a crashed runner never blocks the next one.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from meshcore.errors import MeshError


class StateDirBusy(MeshError):
    hint = "stop it first (Ctrl-C in its terminal, or `kill {pid}`), or pass another --state-dir"


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "up.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"a mesh is already running from {self.path.parent} (pid {holder})", pid=holder
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
