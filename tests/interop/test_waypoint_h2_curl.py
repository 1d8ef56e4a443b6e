"""curl (libcurl + nghttp2, an independent HTTP/2 client) against serve_http2 with prior-knowledge h2c.

Bodies are several times the 1 MiB stream window in both directions, so flow control is exercised
with a peer whose flow-control code is not ours.
"""

from __future__ import annotations

import hashlib
import shutil
from functools import partial
from pathlib import Path

import pytest
import trio

from waypoint.http2 import serve_http2
from waypoint.messages import Body, Request, Response

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed"),
]

BIG = 6 * 1024 * 1024


async def handler(request: Request) -> Response:
    if request.path == b"/digest":
        digest = hashlib.sha256()
        async for chunk in request.body.chunks():
            digest.update(chunk)
        return Response(status=200, body=Body.from_bytes(digest.hexdigest().encode()))
    if request.path == b"/big":
        sent = 0

        async def produce() -> bytes:
            nonlocal sent
            if sent >= BIG:
                return b""
            sent += 64 * 1024
            return b"z" * (64 * 1024)

        return Response(status=200, headers=[(b"content-length", str(BIG).encode())], body=Body(produce))
    return Response(status=404, body=Body.from_bytes(b"no route\n"))


async def test_curl_prior_knowledge_uploads_and_downloads_beyond_the_windows(tmp_path: Path) -> None:
    payload = bytes(range(256)) * (BIG // 256)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda stream: serve_http2(stream, handler), 0
        )
        base = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        curl = [
            "curl",
            "--silent",
            "--show-error",
            "--http2-prior-knowledge",
            "--noproxy",
            "*",
            "--max-time",
            "60",
        ]
        with trio.fail_after(90):
            posted = await trio.run_process(
                [*curl, "--data-binary", f"@{upload}", f"{base}/digest"], capture_stdout=True
            )
            fetched = await trio.run_process(
                [
                    *curl,
                    "--output",
                    "/dev/null",
                    "--write-out",
                    "%{http_version} %{http_code} %{size_download}",
                    f"{base}/big",
                ],
                capture_stdout=True,
            )
        nursery.cancel_scope.cancel()
    assert posted.stdout.decode() == hashlib.sha256(payload).hexdigest()
    assert fetched.stdout.decode().split() == ["2", "200", str(BIG)]
