"""The node agent's ZDS life cycle without pods (no root needed): connect, snapshot, reconnect."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from ztunnel.capture.agent import CapturedPod, NodeAgent
from ztunnel.capture.errors import UnknownPod
from ztunnel.capture.zds import WorkloadInfo
from ztunnel.capture.zds_server import ZdsServer


class NoPods:
    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        raise AssertionError("no pods in this test")

    async def on_del(self, uid: str) -> None:
        raise AssertionError("no pods in this test")


def test_captured_pod_tells_ztunnel_who_it_is() -> None:
    pod = CapturedPod(
        uid="u1",
        name="web-0",
        namespace="prod",
        netns="am-x-pod-web-0",
        ip="198.18.0.2",
        service_account="web",
    )
    assert pod.workload_info == WorkloadInfo(name="web-0", namespace="prod", service_account="web")


async def test_removing_an_unknown_pod_names_the_known_ones(tmp_path: Path) -> None:
    agent = NodeAgent(tmp_path / "none.sock")
    with pytest.raises(UnknownPod, match="no captured pod with uid 'ghost'") as info:
        await agent.remove_pod("ghost")
    assert "pods captured on this node: []" in str(info.value)


async def test_agent_waits_for_ztunnel_then_reconnects_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ztunnel.sock"
    agent = NodeAgent(path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)  # ztunnel is not there yet: the agent keeps trying
        assert not agent.connected

        first = ZdsServer(path, NoPods())
        first_scope = trio.CancelScope()

        async def run_first(task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
            with first_scope:
                await first.run(task_status=task_status)

        await nursery.start(run_first)
        with trio.fail_after(10):
            await agent.wait_connected()
            await first.snapshot_received.wait()

        first_scope.cancel()
        with trio.fail_after(10):
            await agent.wait_connected(False)

        second = ZdsServer(path, NoPods())
        await nursery.start(second.run)
        with trio.fail_after(10):
            await second.snapshot_received.wait()
            await agent.wait_connected()
        nursery.cancel_scope.cancel()
