"""What a proxy must be told to move from the state it holds to the newest one: pure functions.

Versions are content hashes of a type's whole snapshot, so the same config always carries the same
version — a restarted istiod_lite that rebuilt an identical state announces the versions the proxies
already hold, and ``proxy-status`` compares versions without knowing anything about the resources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import attrs

from meshcore.push.protocol import JSON

Snapshot = Mapping[str, JSON]
"""Every resource of one type, by resource key, as its JSON body."""


def version_of(snapshot: Snapshot) -> str:
    """A short stable hash of ``snapshot`` (key order and dict insertion order do not matter)."""
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@attrs.frozen
class Delta:
    """Resources to (re)send and keys to remove; ``full`` means: replace everything of this type."""

    upserts: Mapping[str, JSON]
    removed: tuple[str, ...]
    full: bool

    @property
    def empty(self) -> bool:
        return not self.full and not self.upserts and not self.removed


def compute_delta(base: Snapshot | None, new: Snapshot) -> Delta:
    """The delta from ``base`` (what the proxy holds; ``None``: nothing known, e.g. a new connection)."""
    if base is None:
        return Delta(upserts=dict(new), removed=(), full=True)
    upserts = {key: body for key, body in new.items() if key not in base or base[key] != body}
    removed = tuple(sorted(key for key in base if key not in new))
    return Delta(upserts=upserts, removed=removed, full=False)
