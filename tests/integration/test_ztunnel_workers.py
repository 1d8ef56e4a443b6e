"""A node's ztunnel on several cores: worker processes sharing the pod listeners with SO_REUSEPORT.

Real processes throughout: two ztunnels with static config, the client-side one started with
``--workers 2``. The tests check what an operator relies on — connections are spread over both
processes, the node still has one ``/metrics`` that counts all of them, a dead worker is replaced,
and no worker outlives its main process, whether it drains or is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from meshcore.admin.client import http_request
from tests.support.processes import Component, Spawner, exited
from tests.support.ztunnel_mesh import (
    Pod,
    echo_app,
    free_block,
    socks5_connect,
    split,
    write_cert_dir,
    write_local_config,
    ztunnel_args,
)

CONNECTIONS = 40


@attrs.frozen
class Node:
    main: Component
    proxy: tuple[str, int]
    web: str


@pytest.fixture
async def node(spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Node]:
    block = free_block()
    client = Pod("client", "client", "client", f"127.{block}.1.1", "node-a")
    web = Pod("web", "server", "web", f"127.{block}.2.1", "node-b")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [client, web])
    write_cert_dir(tmp_path / "certs", [client.identity, web.identity], tmp_path / "ca")
    await nursery.start(echo_app, web.ip, 7000)
    spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, tmp_path / "certs"))
    main = spawn.python_module(
        "ztunnel-a", "ztunnel", *ztunnel_args("node-a", f"127.{block}.0.1", config, tmp_path / "certs"),
        "--workers", "2", "--drain-seconds", "1", timeout=40,
    )
    yield Node(main, (client.ip, 15080), web.ip)


async def admin_get(address: str, path: str) -> str:
    host, port = split(address)
    response = await http_request(host, port, "GET", path)
    assert response.status == 200, response.text()
    return response.text()


async def config_dump(node: Node) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await admin_get(node.main.addresses["admin"], "/config_dump"))
    return document


def opened(metrics: str) -> int:
    """Connections this exposition counts as opened by the client side (reporter=source)."""
    total = 0
    for line in metrics.splitlines():
        if line.startswith("istio_tcp_connections_opened_total{") and 'reporter="source"' in line:
            total += int(float(line.rpartition(" ")[2]))
    return total


async def echo_through(node: Node, payload: bytes) -> None:
    stream, code = await socks5_connect(node.proxy, node.web, 7000)
    async with stream:
        assert code == 0
        await stream.send_all(payload)
        await stream.send_eof()
        echoed = b""
        while chunk := await stream.receive_some(4096):
            echoed += chunk
    assert echoed == payload


async def wait_gone(pid: int, timeout: float) -> None:
    for _ in range(int(timeout * 10)):
        if exited(pid):
            return
        await trio.sleep(0.1)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


async def test_connections_are_spread_over_workers_and_counted_once_per_node(node: Node) -> None:
    dump = await config_dump(node)
    (worker,) = dump["workers"]
    assert worker["ready"] and worker["index"] == 1 and worker["pid"] != node.main.proc.pid
    async with trio.open_nursery() as nursery:
        for index in range(CONNECTIONS):
            nursery.start_soon(echo_through, node, b"payload %d" % index)
    served_by_worker = opened(await admin_get(worker["metrics"], "/metrics"))
    node_metrics = await admin_get(node.main.addresses["metrics"], "/metrics")
    assert opened(node_metrics) == CONNECTIONS
    # 40 connections hashed onto two sockets: both processes served some (all on one: p = 2**-39)
    assert 0 < served_by_worker < CONNECTIONS


async def test_a_worker_that_dies_is_replaced_and_the_node_keeps_serving(node: Node) -> None:
    (worker,) = (await config_dump(node))["workers"]
    os.kill(worker["pid"], signal.SIGKILL)
    with trio.fail_after(30):
        while True:
            (replaced,) = (await config_dump(node))["workers"]
            if replaced["ready"] and replaced["pid"] != worker["pid"]:
                break
            await trio.sleep(0.2)
    assert replaced["restarts"] == 1 and replaced["last_exit"] == -signal.SIGKILL
    assert "worker_exited" in node.main.stderr_tail(200)
    for index in range(8):
        await echo_through(node, b"after restart %d" % index)


async def test_sigterm_drains_the_workers_with_the_main_process(node: Node) -> None:
    (worker,) = (await config_dump(node))["workers"]
    node.main.signal(signal.SIGTERM)
    assert await trio.to_thread.run_sync(node.main.proc.wait, 20) == 0
    await wait_gone(worker["pid"], 10)


async def test_a_sigkilled_main_process_leaves_no_worker_behind(node: Node) -> None:
    (worker,) = (await config_dump(node))["workers"]
    node.main.proc.kill()  # the worker's stdin pipe closes with its main process
    await trio.to_thread.run_sync(node.main.proc.wait, 20)
    await wait_gone(worker["pid"], 20)


async def test_workers_need_fixed_pod_ports(spawn: Spawner) -> None:
    proc = spawn.python_module("ztunnel", "ztunnel", "--node", "n", "--node-address", "127.0.0.1",
                               "--local-config", "x.yaml", "--cert-dir", "certs", "--workers", "2",
                               "--hbone-port", "0", wait_ready=False)
    try:
        code = await trio.to_thread.run_sync(proc.proc.wait, 20)
    except subprocess.TimeoutExpired:  # pragma: no cover - reported by the assertion below
        code = None
    assert code == 2
    assert "--workers > 1 needs fixed --hbone-port" in proc.stderr_tail()
