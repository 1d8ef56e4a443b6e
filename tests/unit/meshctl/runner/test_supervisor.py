"""Supervised child processes: readiness, restart with backoff, drain, and no orphans."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import trio

from meshctl.runner.supervisor import (
    ProcessFailed,
    ProcessSpec,
    ReadyLine,
    Started,
    Supervisor,
    TcpProbe,
    backoff_delay,
)

READY_THEN_SLEEP = (
    "import json, sys, time; print(json.dumps({'event': 'ready', 'component': 'x', "
    "'addresses': {'admin': '127.0.0.1:1'}}), flush=True); time.sleep(60)"
)


def test_backoff_doubles_to_a_cap() -> None:
    assert [backoff_delay(n) for n in range(0, 9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_ready_line_restart_and_drain(tmp_path: Path) -> None:
    events: list[tuple[str, str]] = []
    ready_again = trio.Event()

    def record(name: str, event: str, details: object) -> None:
        events.append((name, event))
        if events.count(("component/a", "ready")) == 2:
            ready_again.set()

    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(Supervisor(tmp_path, record).run)
        proc = await supervisor.start(
            ProcessSpec(name="component/a", argv=[sys.executable, "-c", READY_THEN_SLEEP], readiness=ReadyLine())
        )
        assert proc.ready_info["addresses"] == {"admin": "127.0.0.1:1"}
        first_pid = proc.pid
        assert first_pid is not None
        os.kill(first_pid, 9)  # a crash: restarted and ready again
        with trio.fail_after(10):
            await ready_again.wait()
        assert proc.restarts == 1
        second_pid = proc.pid
        assert second_pid is not None
        await supervisor.stop_all(grace=2)
        assert not alive(second_pid)
        nursery.cancel_scope.cancel()
    names = [event for name, event in events if name == "component/a"]
    assert names[:3] == ["started", "ready", "restarting"] and names[-1] == "stopped"


async def test_tcp_probe_readiness_for_an_ordinary_app(tmp_path: Path) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(Supervisor(tmp_path).run)
        app = await supervisor.start(
            ProcessSpec(
                name="pod/prod/web-0",
                argv=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                readiness=TcpProbe("127.0.0.1", port),
            )
        )
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # it really is ready
        await stream.aclose()
        await supervisor.stop_all(grace=2)
        assert app.state == "stopped"
        nursery.cancel_scope.cancel()
    assert "Serving HTTP" in (tmp_path / "pod_prod_web-0.log").read_text()


async def test_a_process_that_dies_before_ready_fails_with_its_log(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(Supervisor(tmp_path).run)
        with pytest.raises(ProcessFailed, match="before it was ready") as info:
            await supervisor.start(
                ProcessSpec(
                    name="bad",
                    argv=[sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
                    readiness=ReadyLine(),
                )
            )
        assert "bad.log" in str(info.value)
        assert "bad" not in supervisor.processes
        nursery.cancel_scope.cancel()
    assert "boom" in (tmp_path / "bad.log").read_text()


async def test_cancelling_the_runner_leaves_no_orphan(tmp_path: Path) -> None:
    pid = None
    async with trio.open_nursery() as nursery:
        supervisor: Supervisor = await nursery.start(Supervisor(tmp_path).run)
        proc = await supervisor.start(
            ProcessSpec(name="sleeper", argv=["sleep", "60"], readiness=Started())
        )
        pid = proc.pid
        nursery.cancel_scope.cancel()
    assert pid is not None and not alive(pid)
