"""Loopback addresses for a local mesh (proxy mode, DESIGN §4).

Each mesh takes a /16 inside 127.0.0.0/8, derived from its state directory, so two meshes run side
by side without sharing a port. Inside it, ``127.X.0.N`` are nodes and ``127.X.1.0`` upwards are
pods; every component then binds the standard ports (15008, 15020 …) on an address of its own.
127.0.0.0/16 and 127.255.0.0/16 are never used: the first holds 127.0.0.1, the second ends at the
broadcast-looking 127.255.255.255.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path

import attrs

POD_BASE = 256  # first pod offset inside the /16 (127.X.1.0)
MAX_NODES = 250
MAX_PODS = 65536 - POD_BASE - 2


class AddressSpaceExhausted(Exception):
    """More nodes or pods than one mesh's /16 can hold."""


def mesh_block(state_dir: Path) -> ipaddress.IPv4Network:
    """The /16 for the mesh whose state lives in ``state_dir`` (stable across restarts)."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).digest()
    second_octet = 1 + digest[0] % 254  # 1..254
    return ipaddress.IPv4Network(f"127.{second_octet}.0.0/16")


@attrs.define
class AddressPlan:
    """Hands out node and pod addresses; released pod addresses are reused, lowest first."""

    block: ipaddress.IPv4Network
    _pods_in_use: set[int] = attrs.field(factory=set)

    def node_address(self, index: int) -> str:
        if not 0 <= index < MAX_NODES:
            raise AddressSpaceExhausted(f"node index {index} outside 0..{MAX_NODES - 1}")
        return str(self.block.network_address + 1 + index)

    def allocate_pod(self) -> str:
        for offset in range(POD_BASE, POD_BASE + MAX_PODS):
            if offset not in self._pods_in_use:
                self._pods_in_use.add(offset)
                return str(self.block.network_address + offset)
        raise AddressSpaceExhausted(f"all {MAX_PODS} pod addresses in {self.block} are in use")

    def reserve_pod(self, address: str) -> None:
        """Mark an address as used (a pod restored from the state directory keeps its IP)."""
        self._pods_in_use.add(self._offset(address))

    def release_pod(self, address: str) -> None:
        self._pods_in_use.discard(self._offset(address))

    def _offset(self, address: str) -> int:
        ip = ipaddress.IPv4Address(address)
        if ip not in self.block:
            raise ValueError(f"{address} is not inside this mesh's block {self.block}")
        return int(ip) - int(self.block.network_address)
