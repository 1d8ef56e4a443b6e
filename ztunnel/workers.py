"""Several cores for one node: the main ztunnel starts worker processes that share its pod listeners.

CPython runs Python code on one core per process, so a node that needs more than one core runs
``--workers N`` processes. The main process is worker 0: it owns the node's admin, metrics and
readiness ports and serves pods like any worker. It starts workers 1..N-1 as ``python -m ztunnel``
with the same node, state source and pod ports plus a hidden ``--worker-index``; every process binds
each pod's 15008/15080 with ``SO_REUSEPORT`` and the kernel spreads new connections across them.
Each worker keeps its own state subscription, certificates and HBONE pool — nothing is shared at run
time, so a worker is exactly a ztunnel and needs no new protocol.

Lifetimes are tied together without signals: a worker's stdin is a pipe from the main process, and a
worker drains and exits when it reads EOF — which happens both when the main process closes it on
shutdown and when the main process dies, even by SIGKILL (``PR_SET_PDEATHSIG`` is not usable here:
it fires when the *thread* that forked exits, and trio spawns from reusable worker threads). A worker
that exits while the node is serving is restarted with backoff and reported.

The main process answers ``/metrics`` with its own series plus every ready worker's, summed
(:mod:`meshcore.telemetry.merge`), so Prometheus still scrapes one target per node.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import structlog
import trio

from meshcore.admin.client import http_request
from meshcore.errors import MeshError

log = structlog.get_logger("ztunnel.workers")

READY_TIMEOUT = 30.0
SCRAPE_TIMEOUT = 2.0
STOP_GRACE = 3.0
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)


class WorkerStartFailed(MeshError):
    """A worker process exited or stayed silent before announcing readiness."""

    hint = "run the same command with --workers 1 to see the error directly; {detail}"


@attrs.define
class Worker:
    """What the main process knows about one worker process."""

    index: int
    pid: int | None = None
    admin: str | None = None
    metrics: str | None = None
    ready: bool = False
    restarts: int = 0
    last_exit: int | None = None

    def dump(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _ready_addresses(line: bytes) -> dict[str, str] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("event") == "ready" and isinstance(doc.get("addresses"), dict):
        return {str(k): str(v) for k, v in doc["addresses"].items()}
    return None


class _Lines:
    """Split a byte stream into lines (the worker's stdout carries only its one ready line)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def next(self) -> bytes | None:
        while b"\n" not in self._buffer:
            data = await self._stream.receive_some(65536)
            if not data:
                return None
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


class WorkerSet:
    """Workers 1..count-1 of a node: started, supervised, scraped and stopped by the main process."""

    def __init__(self, worker_argv: Sequence[Sequence[str]], *, drain_seconds: float) -> None:
        self._argv = [list(argv) for argv in worker_argv]
        self._drain_seconds = drain_seconds
        self.workers = [Worker(index) for index in range(1, len(self._argv) + 1)]
        self._stdin: dict[int, trio.abc.SendStream] = {}
        self._stop_requested = trio.Event()
        self._all_stopped = trio.Event()
        self._running = 0

    def pending(self) -> list[str]:
        """Workers that are not serving right now (for the node's readiness answer)."""
        return [f"worker {w.index}" for w in self.workers if not w.ready]

    def dump(self) -> list[dict[str, Any]]:
        return [w.dump() for w in self.workers]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker, report once all are ready, then keep them running until :meth:`stop`."""
        async with trio.open_nursery() as nursery:
            for worker, argv in zip(self.workers, self._argv, strict=True):
                await nursery.start(self._supervise, worker, argv)
            task_status.started()

    async def _supervise(self, worker: Worker, argv: list[str], *, task_status: trio.TaskStatus[None]) -> None:
        first = True
        while not self._stop_requested.is_set():
            exit_code = await self._run_once(worker, argv, task_status if first else None)
            first = False
            worker.last_exit = exit_code
            if self._stop_requested.is_set():
                break
            delay = RESTART_BACKOFF[min(worker.restarts, len(RESTART_BACKOFF) - 1)]
            worker.restarts += 1
            log.error("worker_exited", worker=worker.index, exit_code=exit_code, restart_in_s=delay,
                      restarts=worker.restarts)
            await trio.sleep(delay)

    async def _run_once(
        self, worker: Worker, argv: list[str], task_status: trio.TaskStatus[None] | None
    ) -> int:
        command = [sys.executable, "-m", "ztunnel", *argv]
        process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert process.stdin is not None and process.stdout is not None
        worker.pid = process.pid
        self._stdin[worker.index] = process.stdin
        self._running += 1
        try:
            lines = _Lines(process.stdout)
            addresses: dict[str, str] | None = None
            with trio.move_on_after(READY_TIMEOUT):
                while addresses is None:
                    line = await lines.next()
                    if line is None:
                        break
                    addresses = _ready_addresses(line)
            if addresses is None:
                process.kill()
                code = await process.wait()
                if task_status is not None:
                    raise WorkerStartFailed(f"ztunnel worker {worker.index} did not become ready",
                                            detail=f"it exited with status {code}")
                return code
            worker.admin, worker.metrics, worker.ready = addresses.get("admin"), addresses.get("metrics"), True
            log.info("worker_ready", worker=worker.index, pid=process.pid, metrics=worker.metrics)
            if task_status is not None:
                task_status.started()
            while await lines.next() is not None:
                pass  # nothing else is expected on stdout; reading keeps the pipe from filling
            return await process.wait()
        finally:
            worker.ready = False
            self._stdin.pop(worker.index, None)
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await process.stdout.aclose()
                await process.stdin.aclose()
            self._running -= 1
            if self._stop_requested.is_set() and self._running == 0:
                self._all_stopped.set()

    async def stop(self) -> None:
        """Drain every worker (EOF on its stdin), wait for them, kill any still running after the grace."""
        self._stop_requested.set()
        if self._running == 0:
            return
        for stdin in list(self._stdin.values()):
            with trio.CancelScope(shield=True):
                await stdin.aclose()
        with trio.move_on_after(self._drain_seconds + STOP_GRACE):
            await self._all_stopped.wait()

    async def metrics_texts(self) -> list[str]:
        """Every ready worker's ``/metrics`` text; a worker that does not answer in time is left out."""
        texts: list[str | None] = [None] * len(self.workers)

        async def scrape(slot: int, address: str) -> None:
            host, port = _split_address(address)
            try:
                with trio.fail_after(SCRAPE_TIMEOUT):
                    response = await http_request(host, port, "GET", "/metrics", timeout=SCRAPE_TIMEOUT)
            except (OSError, trio.TooSlowError, MeshError) as exc:
                log.warning("worker_scrape_failed", worker=self.workers[slot].index, error=str(exc))
                return
            if response.status == 200:
                texts[slot] = response.body.decode()

        async with trio.open_nursery() as nursery:
            for slot, worker in enumerate(self.workers):
                if worker.ready and worker.metrics is not None:
                    nursery.start_soon(scrape, slot, worker.metrics)
        return [text for text in texts if text is not None]
