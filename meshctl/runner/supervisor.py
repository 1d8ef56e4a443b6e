"""Child processes of `meshctl up`: started, watched for readiness, restarted, drained.

Every component and pod is a real process. A :class:`SupervisedProcess` owns one: it starts it in a
session of its own (so a signal to the runner's terminal does not hit children directly and the
runner can drain them in order), appends its output to ``<logs>/<name>.log``, waits until it is
ready — a JSON ready line for mesh components, a TCP connect for apps — and restarts it with
exponential backoff when it dies, reporting each event. Stopping is a drain: SIGTERM, a grace
period, then SIGKILL.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from meshcore.errors import MeshError
from meshcore.net.netns import connect_tcp_from_netns, open_netns

BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a process that stayed up this long resets its backoff


class ProcessFailed(MeshError):
    hint = "see {log} for its output"


@attrs.frozen
class ReadyLine:
    """Ready when the process prints ``{"event": "ready", ...}`` on stdout (mesh components)."""


@attrs.frozen
class TcpProbe:
    """Ready when ``host:port`` accepts a TCP connection (ordinary apps)."""

    host: str
    port: int
    netns: str | None = None  # probe from inside this named network namespace (netns capture mode)


@attrs.frozen
class Started:
    """Ready as soon as it is running (clients such as ``sleep``)."""


Readiness = ReadyLine | TcpProbe | Started


@attrs.frozen(kw_only=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = attrs.field(factory=dict)
    cwd: Path | None = None
    readiness: Readiness = Started()
    restart: bool = True
    start_timeout: float = 30.0
    netns: str | None = None  # run inside this named network namespace (netns capture mode)


EventSink = Callable[[str, str, Mapping[str, Any]], None]
"""(process name, event, details): started, ready, exited, restarting, stopped."""


def backoff_delay(failures: int) -> float:
    """0.5 s doubling to 30 s: quick recovery from a one-off crash, no busy loop on a broken one."""
    if failures <= 0:
        return 0.0
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * math.pow(2, failures - 1)))


class SupervisedProcess:
    def __init__(
        self, spec: ProcessSpec, log_dir: Path, on_event: EventSink | None = None,
        common_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self._common_env = dict(common_env or {})
        self.log_path = log_dir / f"{spec.name.replace('/', '_')}.log"
        self._on_event = on_event or (lambda name, event, details: None)
        self.state = "pending"
        self.restarts = 0
        self.ready_info: dict[str, Any] = {}
        self.process: trio.Process | None = None
        self._stopping = False
        self._ready = trio.Event()
        self._finished = trio.Event()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    def _emit(self, event: str, /, **details: Any) -> None:
        self.state = event
        self._on_event(self.spec.name, event, details)

    def _argv(self) -> list[str]:
        if self.spec.netns is None:
            return list(self.spec.argv)
        return ["ip", "netns", "exec", self.spec.netns, *self.spec.argv]

    async def run(self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until stopped; ``started`` fires at the first readiness (or raises ProcessFailed)."""
        try:
            await self._supervise(task_status)
        finally:
            self._finished.set()

    async def _supervise(self, task_status: trio.TaskStatus[dict[str, Any]]) -> None:
        failures = 0
        first = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        while not self.stopping():
            started_at = trio.current_time()
            ready, code = await self._run_once(task_status if first else None)
            if ready:
                first = False
            if self.stopping():  # stop() was called while this run was going on
                break
            if first:
                raise ProcessFailed(
                    f"{self.spec.name} exited with {code} before it was ready", log=str(self.log_path)
                )
            if not self.spec.restart:
                self._emit("exited", code=code)
                return
            failures = 1 if trio.current_time() - started_at > STABLE_AFTER else failures + 1
            self.restarts += 1
            delay = backoff_delay(failures)
            self._emit("restarting", code=code, delay=delay, restarts=self.restarts)
            await trio.sleep(delay)
        self._emit("stopped")

    async def _run_once(self, task_status: trio.TaskStatus[dict[str, Any]] | None) -> tuple[bool, int | None]:
        with self.log_path.open("ab") as log:
            process = await trio.lowlevel.open_process(
                self._argv(),
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self._common_env, **self.spec.env},
                cwd=self.spec.cwd,
                start_new_session=True,
            )
        self.process = process
        self._emit("started", pid=process.pid)
        try:
            return await self._watch(process, task_status)
        finally:
            if process.returncode is None:  # cancelled: never leave an orphan behind
                await self._terminate(process, grace=2.0)

    async def _watch(
        self, process: trio.Process, task_status: trio.TaskStatus[dict[str, Any]] | None
    ) -> tuple[bool, int | None]:
        ready = False
        async with trio.open_nursery() as nursery:
            became_ready = trio.Event()
            nursery.start_soon(self._pump_output, process, became_ready)
            if isinstance(self.spec.readiness, TcpProbe):
                nursery.start_soon(self._probe_tcp, self.spec.readiness, process, became_ready)
            elif isinstance(self.spec.readiness, Started):
                became_ready.set()
            with trio.move_on_after(self.spec.start_timeout if task_status is not None else math.inf):
                async with trio.open_nursery() as waiters:
                    waiters.start_soon(_set_when, became_ready, waiters.cancel_scope)
                    waiters.start_soon(_wait_and_cancel, process, waiters.cancel_scope)
            if became_ready.is_set() and process.returncode is None:
                ready = True
                self._ready.set()
                self._emit("ready", pid=process.pid, addresses=self.ready_info.get("addresses", {}))
                if task_status is not None:
                    task_status.started(self.ready_info)
            elif process.returncode is None:
                await self._terminate(process, grace=2.0)
            await process.wait()
            nursery.cancel_scope.cancel()
        return ready, process.returncode

    async def _pump_output(self, process: trio.Process, became_ready: trio.Event) -> None:
        """Copy stdout to the log, picking up the ready line on the way."""
        assert process.stdout is not None
        pending = b""
        with self.log_path.open("ab") as log:
            while chunk := await process.stdout.receive_some(65536):
                log.write(chunk)
                log.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not became_ready.is_set() and isinstance(self.spec.readiness, ReadyLine):
                        info = _ready_line(line)
                        if info is not None:
                            self.ready_info = info
                            became_ready.set()

    @staticmethod
    async def _probe_tcp(probe: TcpProbe, process: trio.Process, became_ready: trio.Event) -> None:
        while process.returncode is None:
            try:
                stream = await _probe_connect(probe)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            became_ready.set()
            return

    def stopping(self) -> bool:
        return self._stopping

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Drain: SIGTERM, up to ``grace`` seconds, then SIGKILL; no restart afterwards."""
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            await self._terminate(self.process, grace)
        await self._finished.wait()

    @staticmethod
    async def _terminate(process: trio.Process, grace: float) -> None:
        with trio.CancelScope(shield=True):
            _signal_group(process, signal.SIGTERM)
            with trio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                _signal_group(process, signal.SIGKILL)
                await process.wait()


def _signal_group(process: trio.Process, signum: int) -> None:
    """Signal the child's whole session (it may have forked, e.g. `ip netns exec` or a shell)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return
    except PermissionError:
        process.send_signal(signum)


async def _probe_connect(probe: TcpProbe) -> trio.abc.Stream:
    if probe.netns is None:
        return await trio.open_tcp_stream(probe.host, probe.port)
    fd = open_netns(probe.netns)
    try:
        return await connect_tcp_from_netns(fd, (probe.host, probe.port), mark=None)
    finally:
        os.close(fd)


def _ready_line(line: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("event") == "ready":
        return doc
    return None


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _wait_and_cancel(process: trio.Process, scope: trio.CancelScope) -> None:
    await process.wait()
    scope.cancel()


class Supervisor:
    """Owns every supervised process of one runner; a process lives exactly as long as its task."""

    def __init__(
        self, log_dir: Path, on_event: EventSink | None = None, *, common_env: Mapping[str, str] | None = None
    ) -> None:
        """``common_env`` is added to every child's environment (the runner's leftover mark)."""
        self.log_dir = log_dir
        self._on_event = on_event
        self._common_env = dict(common_env or {})
        self.processes: dict[str, SupervisedProcess] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    async def start(self, spec: ProcessSpec) -> SupervisedProcess:
        """Start ``spec`` and return once it is ready (raises ProcessFailed if it never is)."""
        if self._nursery is None:
            raise RuntimeError("Supervisor.run() is not running")
        if spec.name in self.processes:
            raise ValueError(f"a process named {spec.name} is already supervised")
        process = SupervisedProcess(spec, self.log_dir, self._on_event, self._common_env)
        self.processes[spec.name] = process
        try:
            await self._nursery.start(process.run)
        except BaseException:
            self.processes.pop(spec.name, None)
            raise
        return process

    async def stop(self, name: str, grace: float = 5.0) -> None:
        process = self.processes.pop(name, None)
        if process is not None:
            await process.stop(grace)

    async def stop_all(self, grace: float = 5.0) -> None:
        """Drain in reverse start order: apps before the proxies that carry their traffic."""
        for name in reversed(list(self.processes)):
            await self.stop(name, grace)
