"""Bench clients that wrk cannot play: one bulk stream, and thousands of idle tunnels held open.

Both speak plain HTTP/1.1 over a socket, to nginx directly, to an Envoy listener, or to a pod's explicit
proxy (absolute-form request, or ``CONNECT`` for the idle tunnels), so the same bytes cross every path.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import attrs
import trio

CHUNK = 1 << 20


@attrs.frozen
class BulkResult:
    bytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds else 0.0


def _request(target: str, path: str, through_proxy: bool) -> bytes:
    line = f"http://{target}{path}" if through_proxy else path
    return f"GET {line} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode()


def bulk_download(entry: tuple[str, int], target: str, path: str, *, through_proxy: bool,
                  timeout: float = 60.0) -> BulkResult:
    """GET ``path`` from ``target`` through ``entry``; time from the request to the last body byte."""
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with socket.create_connection(entry, timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(_request(target, path, through_proxy))
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view)
            if not n:
                raise RuntimeError(f"connection closed before the response head (got {head[:200]!r})")
            head += bytes(view[:n])
        header, _, body_start = head.partition(b"\r\n\r\n")
        if not header.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"bulk request failed: {header.splitlines()[0]!r}")
        length = next(int(line.split(b":", 1)[1]) for line in header.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        received = len(body_start)
        while received < length:
            n = sock.recv_into(view)
            if not n:
                break
            received += n
        elapsed = time.perf_counter() - started
    if received < length:
        raise RuntimeError(f"bulk body cut short: {received} of {length} bytes")
    return BulkResult(received, elapsed)


async def _open_idle(entry: tuple[str, int], target: str, through_proxy: bool) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(*entry)
    try:
        if through_proxy:
            await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
            reply = await _read_head(stream)
            if b" 200 " not in reply.split(b"\r\n", 1)[0] + b" ":
                raise RuntimeError(f"CONNECT refused: {reply[:100]!r}")
        # one request proves the tunnel reaches the app; then the connection idles (nginx keeps it)
        await stream.send_all(f"GET / HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        await _read_head(stream)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def _read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("closed before a reply")
        data += chunk
    return data


async def hold_idle(entry: tuple[str, int], target: str, count: int, *, through_proxy: bool,
                    measure: Callable[[], float], batch: int = 200,
                    timeout: float = 300.0) -> tuple[int, int, float]:
    """Open ``count`` tunnels (``batch`` at a time), call ``measure()`` while all are open, close them.

    Returns (opened, failed, what ``measure`` returned)."""
    opened: list[trio.SocketStream] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        try:
            opened.append(await _open_idle(entry, target, through_proxy))
        except (OSError, RuntimeError, trio.BrokenResourceError):
            failures += 1

    try:
        with trio.fail_after(timeout):
            for start in range(0, count, batch):
                async with trio.open_nursery() as nursery:
                    for _ in range(min(batch, count - start)):
                        nursery.start_soon(one)
        await trio.sleep(1.0)  # let the proxies settle (buffers, pools) before reading memory
        result = measure()
    finally:
        for stream in opened:
            await trio.aclose_forcefully(stream)
    return len(opened), failures, result
