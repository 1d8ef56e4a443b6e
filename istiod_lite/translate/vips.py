"""Service VIPs for services that bring no ``clusterIP`` — 240.240.0.0/16 locally (DESIGN §4).

Kubernetes allocates a ClusterIP once and keeps it for the service's life; clients cache the address
(DNS answers, open connections, ztunnel lookups), so an address must not move when *another* service
is added. Hence: the first choice is a hash of the service key (the same key gets the same address
across restarts and control-plane instances), a collision probes forward, and an allocator keeps what
it handed out so later translations give every surviving service the address it already has.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from meshcore.errors import MeshError

DEFAULT_VIP_RANGE = "240.240.0.0/16"


class VipRangeExhausted(MeshError):
    hint = "the VIP range {cidr} has no free address for {service}; remove services or widen the range"


class VipAllocator:
    """Deterministic, sticky VIP assignment. One instance should live as long as the control plane."""

    def __init__(self, cidr: str = DEFAULT_VIP_RANGE) -> None:
        self._network = ipaddress.ip_network(cidr)
        if self._network.num_addresses < 4:
            raise ValueError(f"VIP range {cidr} is too small")
        self._assigned: dict[str, str] = {}

    @property
    def cidr(self) -> str:
        return str(self._network)

    def allocate_all(self, keys: Iterable[str], reserved: Iterable[str] = ()) -> dict[str, str]:
        """An address for every key. ``reserved`` (explicit clusterIPs) are never handed out; keys that
        are gone release their addresses. Existing assignments are kept unless now reserved."""
        wanted = sorted(set(keys))
        taken = {str(ipaddress.ip_address(ip)) for ip in reserved}
        kept = {k: ip for k, ip in self._assigned.items() if k in wanted and ip not in taken}
        used = taken | set(kept.values())
        for key in wanted:
            if key not in kept:
                kept[key] = self._first_free(key, used)
                used.add(kept[key])
        self._assigned = kept
        return dict(kept)

    def _first_free(self, key: str, used: set[str]) -> str:
        size = self._network.num_addresses - 2  # no network or broadcast address
        start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size
        for step in range(size):
            candidate = str(self._network.network_address + 1 + (start + step) % size)
            if candidate not in used:
                return candidate
        raise VipRangeExhausted(f"no free VIP for {key}", cidr=self.cidr, service=key)
