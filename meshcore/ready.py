"""The readiness announcement every component prints once its listeners are bound.

The process harness (``tests/support/processes.py``) and ``meshctl up`` read a component's stdout and
wait for exactly one JSON line ``{"event": "ready", "component": ..., "addresses": {name: "host:port"}}``
instead of sleeping and guessing. Logs go to stderr, so this line is the only thing on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from meshcore.errors import MeshError

_RESERVED = frozenset({"event", "component", "addresses"})


class InvalidReadyAnnouncement(MeshError):
    """The readiness line would not be valid for the harness."""

    hint = "pass addresses as {{name: 'host:port'}} and extra fields whose names are not {reserved}"


def format_address(host: str, port: int) -> str:
    """``host:port``, bracketing IPv6 literals (``[::1]:15000``) so the port split is unambiguous."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def announce_ready(
    component: str, addresses: Mapping[str, str], *, stream: TextIO | None = None, **extra: Any
) -> dict[str, Any]:
    """Print the single readiness JSON line to stdout (or ``stream``), flush it, and return it."""
    clash = _RESERVED & extra.keys()
    if clash:
        raise InvalidReadyAnnouncement(
            f"extra readiness fields {sorted(clash)} collide with the line's own keys",
            reserved=sorted(_RESERVED),
        )
    bad = {name: value for name, value in addresses.items() if not isinstance(value, str) or ":" not in value}
    if bad:
        raise InvalidReadyAnnouncement(
            f"addresses must be 'host:port' strings; got {bad!r}", reserved=sorted(_RESERVED)
        )
    line: dict[str, Any] = {"event": "ready", "component": component, "addresses": dict(addresses), **extra}
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(line, separators=(",", ":"), default=str) + "\n")
    out.flush()
    return line
