"""Start real mesh components as subprocesses, the way a user would, and always reap them.

Components announce readiness with one JSON line on stdout:
``{"event": "ready", "component": "...", "addresses": {"name": "host:port", ...}}``
(logs go to stderr). :func:`spawn` waits for that line, so a test never sleeps to guess readiness.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


class ComponentFailed(RuntimeError):
    """The component exited or never became ready; the message carries its stderr tail."""


class Component:
    """A running component process with the addresses it announced."""

    def __init__(self, name: str, proc: subprocess.Popen[str], log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.ready: dict[str, Any] = {}
        self.stdout_lines: list[str] = []
        self._lines_cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    @property
    def addresses(self) -> dict[str, str]:
        return dict(self.ready.get("addresses", {}))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lines_cond:
                self.stdout_lines.append(line.rstrip("\n"))
                self._lines_cond.notify_all()
        with self._lines_cond:
            self._lines_cond.notify_all()

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_line(self, predicate: Any, timeout: float = 20.0) -> str:
        """Block until a stdout line satisfies ``predicate``; fail with the stderr tail otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._lines_cond:
            while True:
                for line in self.stdout_lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.stdout_lines)
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise ComponentFailed(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.stderr_tail()}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ComponentFailed(f"{self.name} not ready after {timeout}s:\n{self.stderr_tail()}")
                self._lines_cond.wait(min(remaining, 0.2))

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        def is_ready(line: str) -> bool:
            try:
                doc = json.loads(line)
            except ValueError:
                return False
            return isinstance(doc, dict) and doc.get("event") == "ready"

        self.ready = json.loads(self.wait_for_line(is_ready, timeout))
        return self.ready

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


class Spawner:
    """Owns every process a test starts; :meth:`close` reaps them all, newest first."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.components: list[Component] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        timeout: float = 20.0,
        cwd: Path | None = None,
    ) -> Component:
        log_path = self.workdir / f"{name}.{len(self.components)}.stderr.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        stderr = log_path.open("w")
        try:
            proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=full_env,
                cwd=cwd or self.workdir,
                start_new_session=True,
            )
        finally:
            stderr.close()
        component = Component(name, proc, log_path)
        self.components.append(component)
        if wait_ready:
            component.wait_ready(timeout)
        return component

    def python_module(self, name: str, module: str, *args: str, **kwargs: Any) -> Component:
        return self.start(name, [sys.executable, "-m", module, *args], **kwargs)

    def close(self) -> None:
        for component in reversed(self.components):
            component.stop()
        self.components.clear()


@contextmanager
def spawner(workdir: Path) -> Iterator[Spawner]:
    owner = Spawner(workdir)
    try:
        yield owner
    finally:
        owner.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawner]:
    """Start components with ``spawn.python_module(name, module, *args)``; all are reaped afterwards."""
    with spawner(tmp_path) as owner:
        yield owner


def exited(pid: int) -> bool:
    """True once ``pid`` has exited; a zombie waiting for whoever adopted it counts as exited."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
