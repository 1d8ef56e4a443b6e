"""``python -m waypoint``: run one waypoint until SIGTERM/SIGINT or ``/quitquitquit``.

Prints the readiness line (:mod:`meshcore.ready`) on stdout once the certificate and the view are
loaded and every listener is bound; logs (and the access log) go to stderr as JSON. Exit status: 0
after a drain, 2 for a bad command line, 1 when the waypoint cannot start (the message says why).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import trio

from meshcore.errors import MeshError
from meshcore.ready import announce_ready
from meshcore.runtime import tune_gc
from meshcore.telemetry.logs import configure_logging, get_logger
from waypoint.config import ConfigError, WaypointSettings, parse_args
from waypoint.proxy import Waypoint

log = get_logger("waypoint.main")


async def _drain_on_signal(waypoint: Waypoint) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            waypoint.drain()


async def serve(settings: WaypointSettings) -> None:
    waypoint = Waypoint(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain_on_signal, waypoint)
        async with trio.open_nursery() as proxy:
            addresses = await proxy.start(waypoint.run)
            announce_ready("waypoint", addresses, identity=settings.identity)
            tune_gc()
        nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup[MeshError]) -> list[MeshError]:
    """``except*`` keeps the nesting of the nurseries an error crossed; the user needs only the errors
    (counting only the top level would report a failed start as exit status 0)."""
    out: list[MeshError] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, component="waypoint")
    failures: list[MeshError] = []
    try:
        trio.run(serve, settings)
    except* MeshError as group:
        failures.extend(_leaves(group))
    for failure in failures:
        log.error("waypoint_failed", error=str(failure))
        print(f"waypoint: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
