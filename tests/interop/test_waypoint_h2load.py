"""h2load (nghttp2's load generator, an independent HTTP/2 client) against :func:`serve_http2` over h2c."""

from __future__ import annotations

import re
import shutil
from functools import partial

import pytest
import trio

from waypoint.http2 import serve_http2
from waypoint.messages import Body, Request, Response

pytestmark = pytest.mark.interop

REQUESTS_LINE = re.compile(
    rb"requests: (?P<total>\d+) total, (?P<started>\d+) started, (?P<done>\d+) done, "
    rb"(?P<succeeded>\d+) succeeded, (?P<failed>\d+) failed, (?P<errored>\d+) errored, "
    rb"(?P<timeout>\d+) timeout"
)
STATUS_LINE = re.compile(rb"status codes: (?P<ok>\d+) 2xx, \d+ 3xx, (?P<client>\d+) 4xx, (?P<server>\d+) 5xx")
RATE_LINE = re.compile(rb"finished in [\d.]+m?s, (?P<rate>[\d.]+) req/s")


async def hello(request: Request) -> Response:
    await request.body.read_all(1 << 16)
    text = b"hello " + request.path
    return Response(
        status=200, headers=[(b"content-length", str(len(text)).encode())], body=Body.from_bytes(text)
    )


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed (Debian nghttp2-client)")
async def test_h2load_over_h2c_completes_without_errors() -> None:
    served: list[int] = []

    async def counting(request: Request) -> Response:
        served.append(1)
        return await hello(request)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, host="127.0.0.1"), lambda stream: serve_http2(stream, counting), 0
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(120):
            result = await trio.run_process(
                ["h2load", "-n", "2000", "-c", "10", "-m", "10", f"http://127.0.0.1:{port}/"],
                capture_stdout=True,
                capture_stderr=True,
            )
        nursery.cancel_scope.cancel()
    output = result.stdout
    requests = REQUESTS_LINE.search(output)
    statuses = STATUS_LINE.search(output)
    assert requests is not None and statuses is not None, output.decode(errors="replace")
    assert int(requests["total"]) == 2000
    assert int(requests["succeeded"]) == 2000
    assert (int(requests["failed"]), int(requests["errored"]), int(requests["timeout"])) == (0, 0, 0)
    assert int(statuses["ok"]) == 2000
    assert len(served) == 2000
    rate = RATE_LINE.search(output)
    if rate is not None:
        print(f"h2load against serve_http2: {float(rate['rate']):.0f} requests/s")
