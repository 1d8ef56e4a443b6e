"""Throughput of one HBONE tunnel on loopback — a measurement, not a test.

    .venv/bin/python -m tests.unit.meshcore.hbone.throughput [MiB] [--one-process] [--tunnels]

The server (HBONE terminator + a sink/echo app it copies to over TCP) runs in a child process, like
the destination ztunnel; the parent is the source side (pool + tunnel). Prints MB/s one way, and with
``--tunnels`` how many short tunnels (open, 1 KiB echo, close) per second 1 and 64 callers get.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from multiprocessing.connection import Connection

import trio

from meshcore.hbone import HbonePool, HboneServer, PoolKey
from tests.unit.meshcore.hbone.harness import tunnel_to_app
from tests.unit.meshcore.hbone.pki import Pki, verify_any_in_domain, verify_one_of

MiB = 1024 * 1024


async def _sink(stream: trio.abc.Stream) -> None:
    async with stream:
        while await stream.receive_some(1 << 20):
            pass
        if isinstance(stream, trio.abc.HalfCloseableStream):
            await stream.send_eof()


async def _echo(stream: trio.abc.Stream) -> None:
    async with stream:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # tunnels still open when the measurement stops are reset


async def _serve(pki: Pki, reply: Connection | None, task_status: trio.TaskStatus[tuple[int, int]]) -> None:
    async with trio.open_nursery() as nursery:
        sink = await nursery.start(trio.serve_tcp, _echo if "--tunnels" in sys.argv else _sink, 0)
        server = HboneServer(
            pki.server_context(pki.spiffe("bench", "server")),
            verify_any_in_domain(),
            tunnel_to_app,
            serves=lambda ip: True,
        )
        _, port = await nursery.start(server.run, "127.0.0.1", 0)
        ports = (port, sink[0].socket.getsockname()[1])
        if reply is not None:
            reply.send(ports)
        task_status.started(ports)


def _child(pki: Pki, reply: Connection) -> None:
    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve, pki, reply)

    trio.run(serve)


async def _tunnel_rate(pki: Pki, hbone_port: int, app_port: int, callers: int, seconds: float = 3.0) -> float:
    client_ctx = pki.client_context(pki.spiffe("bench", "client"))
    pool = HbonePool(lambda key: (client_ctx, verify_one_of(key.destination_identities)))
    key = PoolKey(pki.spiffe("bench", "client"), (pki.spiffe("bench", "server"),), "127.0.0.1", hbone_port)
    payload = b"r" * 1024
    done = 0

    async def caller() -> None:
        nonlocal done
        while True:
            async with pool.open(key, f"127.0.0.1:{app_port}") as (_, stream):
                await stream.send_all(payload)
                await stream.send_eof()  # a clean request/response: both sides half-close
                got = 0
                while chunk := await stream.receive_some():
                    got += len(chunk)
                assert got == len(payload)
            done += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with trio.move_on_after(seconds):
            async with trio.open_nursery() as callers_nursery:
                for _ in range(callers):
                    callers_nursery.start_soon(caller)
        nursery.cancel_scope.cancel()
    return done / seconds


async def _measure(size: int, pki: Pki, hbone_port: int, sink_port: int) -> float:
    client_ctx = pki.client_context(pki.spiffe("bench", "client"))
    pool = HbonePool(lambda key: (client_ctx, verify_one_of(key.destination_identities)))
    block = bytes(range(256)) * 4096  # 1 MiB
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        key = PoolKey(
            pki.spiffe("bench", "client"), (pki.spiffe("bench", "server"),), "127.0.0.1", hbone_port
        )
        async with pool.open(key, f"127.0.0.1:{sink_port}") as (_, stream):
            start = time.perf_counter()
            for _ in range(size // MiB):
                await stream.send_all(block)
            await stream.send_eof()
            assert await stream.receive_some() == b""  # the sink finished reading everything
            elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return size / elapsed / 1e6


def main() -> None:
    size = int(sys.argv[1]) * MiB if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1024 * MiB
    pki = Pki()
    if "--one-process" in sys.argv:

        async def both() -> float:
            async with trio.open_nursery() as nursery:
                hbone_port, sink_port = await nursery.start(_serve, pki, None)
                rate = await _measure(size, pki, hbone_port, sink_port)
                nursery.cancel_scope.cancel()
            return rate

        print(f"one process: {trio.run(both):.0f} MB/s over {size // MiB} MiB")
        return
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=_child, args=(pki, child))
    process.start()
    try:
        hbone_port, sink_port = parent.recv()
        if "--tunnels" in sys.argv:
            for callers in (1, 64):
                per_second = trio.run(_tunnel_rate, pki, hbone_port, sink_port, callers)
                print(
                    f"two processes: {per_second:.0f} tunnels/s (open, 1 KiB echo, close), {callers} callers"
                )
        else:
            rate = trio.run(_measure, size, pki, hbone_port, sink_port)
            print(f"two processes: {rate:.0f} MB/s over {size // MiB} MiB")
    finally:
        process.terminate()
        process.join(5)


if __name__ == "__main__":
    main()
