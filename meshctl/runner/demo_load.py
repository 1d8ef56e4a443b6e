"""The demo's load generator pod: steady requests to a service URL through the pod's explicit proxy.

``python -m meshctl.runner.demo_load --url http://search-api.prod.svc.cluster.local:8080/ --rps 40``.
It runs as an ordinary mesh pod, so it reaches the service the way any app does: an absolute-form
request to ``$http_proxy`` (its node ztunnel's listener on the pod's own address). It keeps no
statistics the demo shows — `meshctl demo` reads every number from the mesh's own metrics — and
only logs a one-line tally now and then so `meshctl logs` has something to say.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlsplit

import trio

from meshcore.admin.client import AdminRequestFailed, http_request


def proxy_from_env(env: dict[str, str]) -> tuple[str, int]:
    """(host, port) of ``http_proxy``/``HTTP_PROXY``; a pod started by `meshctl up` always has one."""
    value = env.get("http_proxy") or env.get("HTTP_PROXY")
    if not value:
        raise SystemExit("demo_load: no http_proxy in the environment; run it as a mesh pod (meshctl up)")
    parts = urlsplit(value)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"demo_load: http_proxy {value!r} is not http://host:port")
    return parts.hostname, parts.port


async def generate(url: str, rps: float, concurrency: int, proxy: tuple[str, int]) -> None:
    authority = urlsplit(url).netloc
    slots = trio.Semaphore(concurrency)
    tally: Counter[str] = Counter()

    async def one() -> None:
        try:
            response = await http_request(proxy[0], proxy[1], "GET", url, headers={"host": authority}, timeout=5)
            tally[str(response.status)] += 1
        except AdminRequestFailed:
            tally["failed"] += 1
        finally:
            slots.release()

    async with trio.open_nursery() as nursery:
        interval = 1.0 / rps
        next_at = trio.current_time()
        last_log = next_at
        while True:
            await slots.acquire()
            nursery.start_soon(one)
            next_at += interval
            now = trio.current_time()
            if now - last_log >= 10:
                print(f"demo_load: {dict(tally)}", file=sys.stderr, flush=True)
                last_log = now
            await trio.sleep_until(max(next_at, now))


async def run(url: str, rps: float, concurrency: int, proxy: tuple[str, int]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(generate, url, rps, concurrency, proxy)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshctl.runner.demo_load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rps", type=float, default=40.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.rps <= 0 or args.concurrency <= 0:
        parser.error("--rps and --concurrency must be positive")
    trio.run(run, args.url, args.rps, args.concurrency, proxy_from_env(dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
