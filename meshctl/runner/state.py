"""``<state>/status.json``: what a running `meshctl up` has started and where, for `status`/`exec`/`logs`.

The runner rewrites it (atomically) on every process event and removes it when it stops; readers
check that the runner's PID is still alive, so a file left by a runner that was killed outright is
reported as stale instead of being believed. JSON names are a contract (issue 8):
``pods[].{namespace, name, deployment, ip, node, identity, ready}`` and
``proxies[].{kind, name, node, admin, metrics, ready}``; extra keys (pid, restarts, log, env) are
what `exec` and `logs` need.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from meshcore.errors import MeshError
from meshctl.runner.inventory import write_json_atomically

STATUS_FILE = "status.json"


class MeshNotRunning(MeshError):
    hint = "start it with `meshctl up -f FILE` (or pass the --state-dir it was started with)"


class PodNotFound(MeshError):
    hint = "{advice}"


@attrs.define(kw_only=True)
class PodStatus:
    namespace: str
    name: str
    deployment: str
    ip: str
    node: str
    identity: str
    ready: bool = False
    captured: bool = False  # in the ambient mesh: its ztunnel listens on podIP:15008/15080
    pid: int | None = None
    restarts: int = 0
    state: str = "pending"
    log: str = ""
    env: dict[str, str] = attrs.field(factory=dict)
    netns: str = ""  # netns mode: the pod's network namespace (`meshctl exec` enters it)


@attrs.define(kw_only=True)
class ProxyStatus:
    kind: str  # istiod | ztunnel | waypoint
    name: str
    node: str
    admin: str = ""
    metrics: str = ""
    ready: bool = False
    pid: int | None = None
    restarts: int = 0
    state: str = "pending"
    addresses: dict[str, str] = attrs.field(factory=dict)
    log: str = ""
    push_id: str = ""  # how istiod_lite's proxy-status names it: a ztunnel's node, a waypoint's workload


@attrs.define(kw_only=True)
class MeshStatus:
    runner_pid: int
    state_dir: str
    capture: str
    nodes: dict[str, str] = attrs.field(factory=dict)  # name → address
    proxies: dict[str, ProxyStatus] = attrs.field(factory=dict)
    pods: dict[str, PodStatus] = attrs.field(factory=dict)
    problems: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "runner_pid": self.runner_pid,
            "state_dir": self.state_dir,
            "capture": self.capture,
            "nodes": [{"name": name, "address": address} for name, address in self.nodes.items()],
            "proxies": [attrs.asdict(proxy) for proxy in sorted(self.proxies.values(), key=_proxy_order)],
            "pods": [attrs.asdict(pod) for pod in sorted(self.pods.values(), key=lambda p: (p.namespace, p.name))],
            "problems": list(self.problems),
        }


_KIND_ORDER = {"istiod": 0, "ztunnel": 1, "waypoint": 2}


def _proxy_order(proxy: ProxyStatus) -> tuple[int, str]:
    """Control plane first, then node proxies, then waypoints — the order traffic depends on them."""
    return _KIND_ORDER.get(proxy.kind, 3), proxy.name


def write_status(state_dir: Path, status: MeshStatus) -> None:
    write_json_atomically(state_dir / STATUS_FILE, status.to_json())


def remove_status(state_dir: Path) -> None:
    (state_dir / STATUS_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(state_dir: Path) -> dict[str, Any]:
    """The running mesh's status document, or :class:`MeshNotRunning` saying why there is none."""
    path = state_dir / STATUS_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MeshNotRunning(f"no mesh is running from {state_dir} ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise MeshNotRunning(f"cannot read {path}: {exc}") from None
    if not isinstance(document, dict):
        raise MeshNotRunning(f"{path} does not hold a status object")
    pid = document.get("runner_pid")
    if not isinstance(pid, int) or not _alive(pid):
        raise MeshNotRunning(f"{path} was left by a runner (pid {pid}) that is no longer running")
    return dict(document)


_SEVERITY = {"SYNCED": 0, "STALE": 1, "NACKED": 2}


def merge_push_status(document: dict[str, Any], proxy_status: Mapping[str, Any] | None) -> dict[str, Any]:
    """Add each proxy's push state from istiod_lite's ``/debug/proxy-status`` (rows per proxy and type):
    ztunnels by node, waypoints by their ``push_id`` (the workload their token proves).

    ``sync`` is the worst state over the types (NACKED over STALE over SYNCED), ``config`` maps each
    type to the version the proxy ACKed; without an answer from istiod_lite ``sync`` is ``unknown``.
    """
    rows = list(proxy_status.get("proxies", [])) if proxy_status is not None else []
    proxies = []
    for proxy in document.get("proxies", []):
        proxy = dict(proxy)
        if proxy.get("kind") in ("ztunnel", "waypoint"):
            key = proxy.get("push_id") or (proxy.get("node") if proxy.get("kind") == "ztunnel" else None)
            mine = [row for row in rows if key and row.get("proxy") == key]
            states = [str(row.get("state")) for row in mine]
            proxy["sync"] = max(states, key=lambda s: _SEVERITY.get(s, 3)) if states else "unknown"
            proxy["config"] = {str(row.get("type")): row.get("acked_version") for row in mine}
        proxies.append(proxy)
    return {**document, "proxies": proxies}


def pods_of(document: Mapping[str, Any], namespace: str, deployment: str) -> list[dict[str, Any]]:
    """The pods of ``namespace/deployment`` (ready ones first), or :class:`PodNotFound` listing what exists."""
    pods = [p for p in document.get("pods", []) if p["namespace"] == namespace and p["deployment"] == deployment]
    if not pods:
        known = sorted({f"{p['namespace']}/{p['deployment']}" for p in document.get("pods", [])})
        raise PodNotFound(
            f"no pods of deployment {namespace}/{deployment} in this mesh",
            advice=f"running deployments: {', '.join(known) or 'none'} (namespace with -n)",
        )
    return sorted(pods, key=lambda p: (not p.get("ready"), p["name"]))
