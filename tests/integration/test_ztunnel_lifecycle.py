"""A ztunnel process over its life: drain on /quitquitquit and SIGTERM, listeners following the config
file, log level at run time, and many concurrent tunnels sharing few HBONE connections."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from meshcore.admin.client import http_request
from tests.support.processes import Component, Spawner
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


@attrs.frozen
class Pair:
    block: int
    a: Component
    b: Component
    pods: dict[str, Pod]
    config: Path

    @property
    def proxy(self) -> tuple[str, int]:
        return (self.pods["client"].ip, 15080)


def pods_for(block: int, *, late: bool = False) -> dict[str, Pod]:
    pods = {
        "client": Pod("client", "client", "client", f"127.{block}.1.1", "node-a"),
        "web": Pod("web", "server", "web", f"127.{block}.2.1", "node-b"),
        "early": Pod("early", "server", "early", f"127.{block}.2.2", "node-b"),
    }
    if late:
        del pods["early"]
        pods["late"] = Pod("late", "server", "late", f"127.{block}.2.3", "node-b")
    return pods


async def start_pair(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery, *extra: str
) -> Pair:
    block = free_block()
    pods = pods_for(block)
    config = tmp_path / "mesh.yaml"
    write_local_config(config, pods.values())
    identities = [p.identity for p in (*pods.values(), *pods_for(block, late=True).values())]
    write_cert_dir(tmp_path / "certs", identities, tmp_path / "ca")
    for pod in ("web", "early"):
        await nursery.start(echo_app, pods[pod].ip, 7000)
    await nursery.start(echo_app, f"127.{block}.2.3", 7000)
    args = ztunnel_args
    b = spawn.python_module("ztunnel-b", "ztunnel", *args("node-b", f"127.{block}.0.2", config, tmp_path / "certs"),
                            *extra)
    a = spawn.python_module("ztunnel-a", "ztunnel", *args("node-a", f"127.{block}.0.1", config, tmp_path / "certs"),
                            *extra)
    return Pair(block=block, a=a, b=b, pods=pods, config=config)


@pytest.fixture
async def pair(spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Pair]:
    yield await start_pair(spawn, tmp_path, nursery)


async def get(component: Component, port_name: str, path: str, method: str = "GET") -> tuple[int, str]:
    host, port = split(component.addresses[port_name])
    response = await http_request(host, port, method, path)
    return response.status, response.text()


async def wait_exit(component: Component, timeout: float) -> int | None:
    def wait() -> int | None:
        try:
            return component.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    return await trio.to_thread.run_sync(wait)


async def test_quitquitquit_stops_accepting_and_lets_open_connections_finish(pair: Pair) -> None:
    stream, code = await socks5_connect(pair.proxy, pair.pods["web"].ip, 7000)
    assert code == 0
    async with stream:
        await stream.send_all(b"before ")
        assert await get(pair.a, "admin", "/quitquitquit", "POST") == (200, "OK\n")
        ready_status, ready_text = await get(pair.a, "ready", "/healthz/ready")
        assert (ready_status, ready_text) == (503, "not ready: draining\n")
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*pair.proxy)  # the listener is closed: nothing new is accepted
        await stream.send_all(b"after")
        await stream.send_eof()
        echoed = b""
        while chunk := await stream.receive_some(4096):
            echoed += chunk
    assert echoed == b"before after"
    assert await wait_exit(pair.a, 10) == 0
    assert '"drain_finished"' in pair.a.stderr_tail(80) and '"cancelled_connections": 0' in pair.a.stderr_tail(80)


async def test_sigterm_drain_cuts_what_does_not_finish_in_time(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    pair = await start_pair(spawn, tmp_path, nursery, "--drain-seconds", "1")
    stream, code = await socks5_connect(pair.proxy, pair.pods["web"].ip, 7000)
    assert code == 0
    async with stream:
        started = trio.current_time()
        pair.a.signal(signal.SIGTERM)
        assert await wait_exit(pair.a, 10) == 0
        assert trio.current_time() - started >= 1.0  # the open tunnel held the drain to its deadline
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):  # a reset is equally "cut"
            assert await stream.receive_some(10) == b""
    assert "cancelled_connections" in pair.a.stderr_tail(80)


async def test_listeners_follow_the_config_file(pair: Pair) -> None:
    early, late = pair.pods["early"].ip, f"127.{pair.block}.2.3"
    assert "hbone:server/early" in pair.b.addresses
    write_local_config(pair.config, pods_for(pair.block, late=True).values())
    listeners: list[str] = []
    with trio.fail_after(10):
        while f"{late}:15008" not in listeners:
            await trio.sleep(0.2)
            _, body = await get(pair.b, "admin", "/config_dump")
            listeners = [entry["hbone"] for entry in json.loads(body)["listeners"]]
    assert f"{early}:15008" not in listeners
    with pytest.raises(OSError):
        await trio.open_tcp_stream(early, 15008)
    # ztunnel A reloaded too: the client now reaches the new pod through the mesh
    with trio.fail_after(10):
        for _ in range(50):
            stream, code = await socks5_connect(pair.proxy, late, 7000)
            async with stream:
                if code == 0:
                    await stream.send_all(b"new pod")
                    await stream.send_eof()
                    assert await stream.receive_some(100) == b"new pod"
                    break
            await trio.sleep(0.2)
        else:
            raise AssertionError("never reached the new pod")


async def test_log_level_changes_at_run_time(pair: Pair) -> None:
    assert await get(pair.b, "admin", "/logging") == (200, '{\n  "level": "info"\n}\n')
    status, body = await get(pair.b, "admin", "/logging?level=debug", "POST")
    assert status == 200 and '"debug"' in body


async def test_200_concurrent_tunnels_share_at_most_two_hbone_connections(pair: Pair) -> None:
    web = pair.pods["web"].ip
    opened: list[trio.SocketStream] = []
    try:
        async with trio.open_nursery() as nursery:
            async def open_one() -> None:
                stream, code = await socks5_connect(pair.proxy, web, 7000)
                opened.append(stream)
                assert code == 0

            for _ in range(200):
                nursery.start_soon(open_one)
        _, body = await get(pair.a, "admin", "/config_dump")
        pool = json.loads(body)["pool"]
        assert pool["streams"] == 200 and pool["connections"] <= 2, pool
        for index, stream in enumerate(opened):  # every tunnel still carries its own bytes
            await stream.send_all(b"%d" % index)
        for index, stream in enumerate(opened):
            assert await stream.receive_some(16) == b"%d" % index
    finally:
        for stream in opened:
            await stream.aclose()


async def test_a_bad_command_line_exits_2_naming_the_problem(spawn: Spawner) -> None:
    proc = spawn.python_module("ztunnel", "ztunnel", "--node", "n", "--node-address", "not-an-ip",
                               "--local-config", "x.yaml", "--cert-dir", "certs", wait_ready=False)
    assert await wait_exit(proc, 20) == 2
    assert "--node-address 'not-an-ip' is not an IP address" in proc.stderr_tail()


async def test_missing_certificates_exit_1_listing_each_identity(spawn: Spawner, tmp_path: Path) -> None:
    block = free_block()
    config = tmp_path / "mesh.yaml"
    write_local_config(config, pods_for(block).values())
    certs = tmp_path / "certs"
    write_cert_dir(certs, [], tmp_path / "ca")  # a trust bundle, but no workload certificates
    proc = spawn.python_module("ztunnel", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, certs),
                               wait_ready=False)
    assert await wait_exit(proc, 20) == 1
    tail = proc.stderr_tail()
    assert "spiffe://cluster.local/ns/server/sa/web: cannot read" in tail
    assert "spiffe://cluster.local/ns/server/sa/early: cannot read" in tail
    assert "<namespace>/<service-account>/cert-chain.pem" in tail
    assert proc.stdout_lines == []  # never announced ready
