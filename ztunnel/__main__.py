"""``python -m ztunnel``: run one node's ztunnel until SIGTERM/SIGINT or ``/quitquitquit``.

Prints the readiness line (:mod:`meshcore.ready`) on stdout once state is synced, certificates are
loaded and every listener is bound; logs go to stderr as JSON. Exit status: 0 after a drain, 2 for a
bad command line, 1 when the proxy cannot start (the message says what to fix).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

import trio

from meshcore.errors import MeshError
from meshcore.ready import announce_ready
from meshcore.runtime import tune_gc
from meshcore.telemetry.logs import configure_logging, get_logger
from ztunnel.config import ConfigError, ZtunnelConfig, parse_args
from ztunnel.drain import Drain
from ztunnel.proxy import Ztunnel

log = get_logger("ztunnel.main")


async def _drain_on_signal(drain: Drain) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            drain.request()


async def _drain_when_main_exits(drain: Drain) -> None:
    """A worker's stdin is a pipe from its node's main ztunnel: EOF means "drain" (or "main is gone")."""
    async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
        while await stdin.receive_some(4096):
            pass
    log.info("main_process_gone", action="drain")
    drain.request()


async def serve(config: ZtunnelConfig) -> None:
    ztunnel = Ztunnel(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_drain_on_signal, ztunnel.drain)
        if config.is_worker:
            nursery.start_soon(_drain_when_main_exits, ztunnel.drain)
        async with trio.open_nursery() as proxy:
            addresses = await proxy.start(ztunnel.run)
            announce_ready("ztunnel", addresses, node=config.node, worker=config.worker_index,
                           zds_socket=str(config.zds_socket) if config.zds_socket is not None else None)
            tune_gc()
        # ztunnel.run returned: its drain is over, so stop watching for signals
        nursery.cancel_scope.cancel()


def _leaves(group: BaseExceptionGroup[MeshError]) -> list[MeshError]:
    """``except*`` keeps the nesting of the nurseries an error crossed; the user needs only the errors."""
    out: list[MeshError] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"ztunnel: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, component="ztunnel")
    failures: list[MeshError] = []
    try:
        trio.run(serve, config)
    except* MeshError as group:
        failures.extend(_leaves(group))
    for failure in failures:
        log.error("ztunnel_failed", error=str(failure))
        print(f"ztunnel: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
