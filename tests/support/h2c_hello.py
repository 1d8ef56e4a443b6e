"""A prior-knowledge HTTP/2 (h2c) server for end-to-end tests: ``python h2c_hello.py HOST PORT``.

Answers every request with ``hello <path>``; built on the waypoint's own HTTP/2 server shell
(:func:`waypoint.http2.serve_http2`), which the interop tests check against h2load and grpcio.
"""

from __future__ import annotations

import sys
from functools import partial

import trio

from waypoint.http2 import serve_http2
from waypoint.messages import Body, Request, Response


async def hello(request: Request) -> Response:
    await request.body.read_all(1 << 16)
    text = b"hello " + request.path
    return Response(status=200, headers=[(b"content-length", str(len(text)).encode())], body=Body.from_bytes(text))


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(trio.serve_tcp, host=host), lambda stream: serve_http2(stream, hello), port)
        print(f"serving h2c on {host}:{port}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
