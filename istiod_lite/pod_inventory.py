"""Where pods run and at which address, locally: ``<state-dir>/pods.json``, written by the runner.

On Kubernetes the control plane learns pods from the API server; on one machine ``meshctl up`` is the
"kubelet" and publishes them (``meshctl/runner/inventory.py`` writes the file atomically). Translation
needs them: a Workload's addresses and node come from here, and so does node authorization.

:class:`PodInventoryFile` has the :class:`~istiod_lite.stores.base.Store` shape (a revision that moves
when the pods change, ``errors`` when the file is unreadable) so the same store → translate → push
loop re-translates on a pod change; it holds no user resources (``list()`` is empty). An unreadable or
malformed file is reported and the previous pods stay in force, the same rule as for a config file.
No file at all means "no runner": ``pods`` is ``None`` and translation places Deployment replicas itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from istiod_lite.stores.base import ResourceKey, Revision, StoredResource

INVENTORY_FILE = "pods.json"
SUPPORTED_VERSION = 1


@attrs.frozen(kw_only=True)
class Pod:
    """One pod as the runner reports it (the field names of translation's ``PodInfo``, plus ``kind``)."""

    name: str
    namespace: str
    ip: str | None
    node: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    service_account: str = "default"
    deployment: str = ""
    container_ports: Mapping[str, int] = attrs.field(factory=dict)
    kind: str = "pod"


class InventoryInvalid(ValueError):
    pass


def _text(entry: Mapping[str, Any], field: str, where: str, *, default: str | None = None) -> str:
    value = entry.get(field, default)
    if not isinstance(value, str) or (default is None and not value):
        raise InventoryInvalid(f"{where}.{field}: expected a non-empty string, got {value!r}")
    return value


def _pod(entry: Any, where: str) -> Pod:
    if not isinstance(entry, Mapping):
        raise InventoryInvalid(f"{where}: expected an object, got {type(entry).__name__}")
    ip = entry.get("ip")
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except (TypeError, ValueError):
            raise InventoryInvalid(f"{where}.ip: {ip!r} is not an IP address") from None
    labels = entry.get("labels") or {}
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise InventoryInvalid(f"{where}.labels: expected a map of strings")
    ports: dict[str, int] = {}
    for index, port in enumerate(entry.get("container_ports") or ()):
        if not isinstance(port, Mapping) or not isinstance(port.get("port"), int):
            raise InventoryInvalid(f"{where}.container_ports[{index}]: expected {{name, port}}")
        if isinstance(port.get("name"), str) and port["name"]:
            ports[port["name"]] = port["port"]
    return Pod(
        name=_text(entry, "name", where),
        namespace=_text(entry, "namespace", where),
        ip=ip,
        node=_text(entry, "node", where, default=""),
        labels={str(k): v for k, v in labels.items()},
        service_account=_text(entry, "service_account", where, default="default") or "default",
        deployment=_text(entry, "deployment", where, default=""),
        container_ports=ports,
        kind=_text(entry, "kind", where, default="pod"),
    )


def parse_inventory(text: str) -> tuple[Pod, ...]:
    """The pods of a ``pods.json`` text, or :class:`InventoryInvalid` naming the offending field."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise InventoryInvalid(f"not JSON: {exc}") from None
    if not isinstance(document, Mapping) or document.get("version") != SUPPORTED_VERSION:
        got = document.get("version") if isinstance(document, Mapping) else None
        raise InventoryInvalid(f"expected {{'version': {SUPPORTED_VERSION}, 'pods': [...]}}, got version {got!r}")
    pods = document.get("pods")
    if not isinstance(pods, list):
        raise InventoryInvalid("'pods' must be a list")
    return tuple(_pod(entry, f"pods[{index}]") for index, entry in enumerate(pods))


class PodInventoryFile:
    """Follows ``pods.json`` by polling its (mtime, size, inode); see the module docstring."""

    def __init__(self, path: Path, *, poll_interval: float = 0.5) -> None:
        self.path = path
        self.poll_interval = poll_interval
        self.pods: tuple[Pod, ...] | None = None
        self._signature: tuple[int, int, int] | None = None
        self._error: str | None = None
        self._revision = Revision()

    @property
    def revision(self) -> int:
        return self._revision.value

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        return {}

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return {str(self.path): (f"{self.path}: {self._error}",)} if self._error else {}

    async def wait_changed(self, since: int) -> int:
        return await self._revision.wait_changed(since)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.scan()
        task_status.started()
        while True:
            await trio.sleep(self.poll_interval)
            self.scan()

    def scan(self) -> bool:
        """Re-read the file if it changed; returns whether the pods in force changed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            if self._signature is None and self.pods is None:
                return False
            self._signature, self._error = None, None
            return self._set(None)  # the runner removed it: no runner any more
        signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            pods = parse_inventory(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, InventoryInvalid) as exc:
            self._error = f"{exc}; the previous pods stay in force"
            return False
        self._error = None
        return self._set(pods)

    def _set(self, pods: tuple[Pod, ...] | None) -> bool:
        if pods == self.pods:
            return False
        self.pods = pods
        self._revision.bump()
        return True
