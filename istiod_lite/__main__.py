"""``python -m istiod_lite``: run the control plane until SIGTERM/SIGINT.

Prints the readiness line (:mod:`meshcore.ready`) with ``{"control": ..., "admin": ...}`` once the
first config is published and both ports are bound; logs go to stderr as JSON. Exit status: 0 after
a signal, 2 for a bad command line, 1 when istiod_lite cannot start (the message says what to fix).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from istiod_lite.server import Istiod, IstiodOptions
from meshcore.errors import MeshError
from meshcore.ready import announce_ready
from meshcore.telemetry.logs import configure_logging, get_logger

log = get_logger("istiod_lite.main")


def _nodes(text: str) -> tuple[str, ...]:
    nodes = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in nodes if "/" in n or n.startswith(".")]
    if bad:
        raise argparse.ArgumentTypeError(f"node names may not contain '/' or start with '.': {bad}")
    return nodes


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0 picks a free one)")
    return port


def parse_args(argv: Sequence[str]) -> tuple[IstiodOptions, str]:
    parser = argparse.ArgumentParser(prog="python -m istiod_lite", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True, help="CA, tokens, applied resources")
    parser.add_argument("--config-dir", type=Path, help="a directory of YAML resources, watched for changes")
    parser.add_argument("--host", default="127.0.0.1", help="address the control (push/CA) port binds")
    parser.add_argument(
        "--admin-host",
        help="address the admin API binds (default: --host if loopback, else 127.0.0.1; it is unauthenticated)",
    )
    parser.add_argument("--control-port", type=_port, default=15012, help="TLS push and CA endpoint")
    parser.add_argument("--admin-port", type=_port, default=15014, help="admin HTTP API")
    parser.add_argument("--nodes", type=_nodes, default=(), help="comma-separated nodes to issue tokens for")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="config directory re-scan period (s)")
    parser.add_argument("--debounce", type=float, default=0.1, help="quiet period before a push (s)")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    options = IstiodOptions(
        state_dir=args.state_dir,
        config_dir=args.config_dir,
        host=args.host,
        admin_host=args.admin_host,
        control_port=args.control_port,
        admin_port=args.admin_port,
        nodes=args.nodes,
        poll_interval=args.poll_interval,
        debounce=args.debounce,
    )
    return options, args.log_level


async def serve(options: IstiodOptions) -> None:
    istiod = Istiod(options)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(istiod.run)
        announce_ready("istiod", addresses.to_json(), translator=istiod.translator_name)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("signal received; stopping", signal=signal.Signals(signum).name)
                break
        istiod.admin.close(grace=2.0)
        nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    options, level = parse_args(sys.argv[1:] if argv is None else argv)  # exits 2 on a bad command line
    configure_logging(level, component="istiod")
    failures: list[MeshError] = []
    try:
        trio.run(serve, options)
    except* MeshError as group:
        failures.extend(e for e in group.exceptions if isinstance(e, MeshError))
    except* OSError as group:  # e.g. the port is taken
        for exc in group.exceptions:
            failures.append(_BindFailed(str(exc)))
    for failure in failures:
        log.error("istiod_failed", error=str(failure))
        print(f"istiod_lite: {failure}", file=sys.stderr)
    return 1 if failures else 0


class _BindFailed(MeshError):
    hint = "another process may hold the port; pass --control-port/--admin-port (0 picks a free one)"


if __name__ == "__main__":
    sys.exit(main())
