"""What the fabric created, on disk: the JSON state file and the cleanup it drives after a crash.

Every object is recorded *before* it is created, so the file may list a little more than exists (a
crash between the two) but never less; cleanup therefore tolerates names that are already gone. Every
name read back is checked to carry the file's own prefix before anything is deleted, so a stale or
tampered file cannot remove what is not ours.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ztunnel.capture import names
from ztunnel.capture.commands import run_command_sync
from ztunnel.capture.errors import FabricError

STATE_VERSION = 1
NETNS_DIR = Path("/run/netns")
ETC_NETNS_DIR = Path("/etc/netns")


@attrs.frozen
class PodNetwork:
    """One pod's place on the fabric."""

    name: str
    netns: str
    ip: str
    prefix_len: int
    host_veth: str
    veth_index: int

    @property
    def netns_path(self) -> str:
        """Where ``ip netns`` mounted the namespace; open it to get the fd ztunnel needs."""
        return str(NETNS_DIR / self.netns)


@attrs.define
class FabricState:
    """What exists (or may exist, if a crash interrupted its creation); persisted as JSON."""

    prefix: str
    subnet: str
    fabric_netns: str
    bridge: str
    gateway: str
    pods: dict[str, PodNetwork] = attrs.field(factory=dict)

    def to_json(self) -> str:
        """Serialise for the state file."""
        body = attrs.asdict(self)
        body["version"] = STATE_VERSION
        return json.dumps(body, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str) -> FabricState:
        """Parse a state file, refusing one whose names are not under its own prefix."""
        try:
            raw: dict[str, Any] = json.loads(text)
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}, expected {STATE_VERSION}")
            prefix = names.check_prefix(str(raw["prefix"]))
            pods = {key: PodNetwork(**value) for key, value in dict(raw["pods"]).items()}
            state = cls(
                prefix=prefix,
                subnet=str(raw["subnet"]),
                fabric_netns=names.assert_ours(prefix, str(raw["fabric_netns"])),
                bridge=names.assert_ours(prefix, str(raw["bridge"])),
                gateway=str(raw["gateway"]),
                pods=pods,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise FabricError(
                f"state file {source} is not a fabric state: {exc}",
                detail=f"remove {source} by hand after checking `ip netns list` for am-* leftovers",
            ) from exc
        for pod in pods.values():
            names.assert_ours(prefix, pod.netns)
            names.assert_ours(prefix, pod.host_veth)
        return state

    def save(self, path: Path) -> None:
        """Atomically replace the state file (a crash leaves either the old or the new one)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)


def cleanup_commands(state: FabricState) -> list[list[str]]:
    """The commands that remove everything ``state`` records, pods first (pure: no I/O)."""
    commands = [["ip", "netns", "delete", pod.netns] for pod in state.pods.values()]
    commands.append(["ip", "netns", "delete", state.fabric_netns])
    return commands


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def remove_etc_view(state: FabricState) -> None:
    """Drop per-pod ``/etc/netns/<pod netns>`` views (resolv.conf) that belong to us."""
    for pod in state.pods.values():
        view = ETC_NETNS_DIR / names.assert_ours(state.prefix, pod.netns)
        if view.is_dir():
            shutil.rmtree(view)


def cleanup_from_state_sync(path: Path) -> list[str]:
    """Blocking: remove what the state file at ``path`` records; return the namespaces removed."""
    if not path.exists():
        return []
    state = FabricState.from_json(path.read_text(), source=str(path))
    removed = []
    for argv in cleanup_commands(state):
        if netns_exists(argv[-1]):
            run_command_sync(argv)
            removed.append(argv[-1])
    remove_etc_view(state)
    path.unlink()
    return removed


async def cleanup_from_state(path: Path) -> list[str]:
    """Remove leftovers of an earlier run (e.g. after SIGKILL) recorded in ``path``; return them."""
    return await trio.to_thread.run_sync(cleanup_from_state_sync, path)


def existing_netns(prefix: str) -> Sequence[str]:
    """Namespaces currently mounted under ``prefix`` (what a leak check looks at)."""
    names.check_prefix(prefix)
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix + "-"))
