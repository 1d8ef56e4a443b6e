"""The demo's backend: a tiny HTTP service that says which version answered, and can be told to fail.

``python -m meshctl.runner.demo_app --version v2 --host $(POD_IP) --port 8080``. ``GET /`` answers
``{"service", "version", "pod"}`` with 200, or 503 for the configured share of requests — the
failure a bad canary shows. The share starts at ``$DEMO_FAILURE_RATE`` (default 0) and changes at
runtime with ``POST /admin/failure?rate=R`` (0..1), which is how `meshctl demo` breaks v2 mid-run
without restarting it. Prints the standard ready line once it listens.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
from collections.abc import Callable, Sequence

import trio

from meshcore.admin.http import AdminServer
from meshcore.admin.messages import BadRequest, Request, Response
from meshcore.ready import announce_ready, format_address


def parse_rate(text: str | None) -> float:
    """A failure share in 0..1; anything else is refused with the accepted range."""
    try:
        rate = float(text if text is not None else "")
    except ValueError:
        raise BadRequest(f"failure rate {text!r} is not a number", "pass rate=R with 0 <= R <= 1") from None
    if not 0.0 <= rate <= 1.0:
        raise BadRequest(f"failure rate {rate} is outside 0..1", "pass rate=R with 0 <= R <= 1")
    return rate


class DemoApp:
    def __init__(
        self, *, service: str, version: str, pod: str, failure_rate: float = 0.0,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.service = service
        self.version = version
        self.pod = pod
        self.failure_rate = failure_rate
        self._draw = draw

    def mount(self, server: AdminServer) -> AdminServer:
        server.add_route("GET", "/", self.hello)
        server.add_route("POST", "/admin/failure", self.set_failure)
        server.add_route("GET", "/admin/failure", self.get_failure)
        return server

    def answer(self) -> Response:
        """Pure: the response to one request at the current failure rate."""
        body = {"service": self.service, "version": self.version, "pod": self.pod}
        if self.failure_rate > 0 and self._draw() < self.failure_rate:
            return Response.json({**body, "error": "injected failure (POST /admin/failure?rate=0 heals)"}, 503)
        return Response.json(body)

    async def hello(self, _request: Request) -> Response:
        return self.answer()

    async def set_failure(self, request: Request) -> Response:
        self.failure_rate = parse_rate(request.query_one("rate"))
        return Response.json({"version": self.version, "failure_rate": self.failure_rate})

    async def get_failure(self, _request: Request) -> Response:
        return Response.json({"version": self.version, "failure_rate": self.failure_rate})


async def serve(app: DemoApp, host: str, port: int) -> None:
    server = app.mount(AdminServer("demo-app"))
    async with trio.open_nursery() as nursery:
        bound_host, bound_port = await nursery.start(server.run, host, port)
        announce_ready("demo-app", {"http": format_address(bound_host, bound_port)}, version=app.version)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                break
        server.close(grace=1.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshctl.runner.demo_app", description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="the version this instance reports (v1, v2 ...)")
    parser.add_argument("--service", default="search-service")
    parser.add_argument("--host", default=os.environ.get("POD_IP", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rate = parse_rate(os.environ.get("DEMO_FAILURE_RATE", "0"))
    except BadRequest as exc:
        print(f"demo_app: DEMO_FAILURE_RATE: {exc}", file=sys.stderr)
        return 2
    app = DemoApp(service=args.service, version=args.version, pod=os.environ.get("POD_NAME", ""), failure_rate=rate)
    trio.run(serve, app, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
