"""Push latency as Istio measures it (``pilot_proxy_convergence_time``): from the moment a new version
of a type is published to the moment each proxy ACKs it. Sans-IO: versions, status rows and clock
readings in, latencies out.

Measuring to the ACK, not to the send, is the point: a push that sits behind a slow proxy's in-flight
push, or that the proxy takes long to apply, is late from the operator's point of view. A version
that a proxy never ACKs (NACKed, or superseded by a newer one first) yields no sample — the NACK
counter and proxy-status tell that story. A proxy that connects after a version was published is
measured from when it was first seen, so a reconnect measures its own full push, not the version's age.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs


@attrs.frozen
class AckRow:
    """What the tracker needs from one proxy-status row."""

    proxy: str
    type: str
    acked_version: str | None


class ConvergenceTracker:
    """Remembers when each (type, version) was first published and which proxies already ACKed it."""

    def __init__(self) -> None:
        self._published: dict[str, tuple[str, float]] = {}
        self._observed: set[tuple[str, str, str]] = set()
        self._first_seen: dict[str, float] = {}

    def on_catalog(self, versions: Mapping[str, str], now: float) -> None:
        """The published version per type, read at ``now``; a changed version restarts that type's clock."""
        for type_name, version in versions.items():
            current = self._published.get(type_name)
            if current is None or current[0] != version:
                self._published[type_name] = (version, now)
                self._observed = {o for o in self._observed if o[1] != type_name}

    def on_status(self, rows: Iterable[AckRow], now: float) -> list[tuple[str, float]]:
        """``(type, seconds)`` for every proxy that ACKed its type's newest version since the last call."""
        samples = []
        for row in rows:
            since = self._first_seen.setdefault(row.proxy, now)
            published = self._published.get(row.type)
            if published is None or row.acked_version != published[0]:
                continue
            seen = (row.proxy, row.type, published[0])
            if seen in self._observed:
                continue
            self._observed.add(seen)
            samples.append((row.type, max(0.0, now - max(published[1], since))))
        return samples

    def forget(self, live_proxies: Iterable[str]) -> None:
        """Drop what is remembered about proxies that disconnected (a reconnect is measured afresh)."""
        live = set(live_proxies)
        self._observed = {o for o in self._observed if o[0] in live}
        self._first_seen = {p: t for p, t in self._first_seen.items() if p in live}
