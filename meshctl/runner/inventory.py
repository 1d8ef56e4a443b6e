"""``<state>/pods.json``: the runner tells istiod_lite which pods run where, at which address.

On Kubernetes the control plane learns pod IPs and nodes from the API server; locally the runner is
the "kubelet", so it publishes them. The file is rewritten atomically (temp + rename) *before* a new
pod's process starts and *after* a removed pod's process stopped, so translation never points at an
address nobody owns for longer than a restart. Shape (``version`` 1)::

    {"version": 1, "pods": [{"name": "search-v1-0", "namespace": "prod", "ip": "127.9.1.0",
      "node": "node-1", "labels": {...}, "service_account": "default", "deployment": "search-v1",
      "container_ports": [{"name": "http", "port": 8080}], "kind": "pod" | "waypoint"}]}

The field names are those of ``istiod_lite.translate``'s ``PodInfo``; waypoints are listed as pods
too (``kind: waypoint``, labelled ``gateway.networking.k8s.io/gateway-name``), which is how Istio
finds a waypoint's address.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

INVENTORY_FILE = "pods.json"
VERSION = 1


@attrs.frozen(kw_only=True)
class PodRecord:
    name: str
    namespace: str
    ip: str
    node: str
    labels: Mapping[str, str]
    service_account: str
    deployment: str
    container_ports: tuple[tuple[str | None, int], ...] = ()
    kind: str = "pod"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "ip": self.ip,
            "node": self.node,
            "labels": dict(self.labels),
            "service_account": self.service_account,
            "deployment": self.deployment,
            "container_ports": [{"name": name, "port": port} for name, port in self.container_ports],
            "kind": self.kind,
        }


def inventory_json(pods: Iterable[PodRecord]) -> dict[str, Any]:
    ordered = sorted(pods, key=lambda pod: (pod.namespace, pod.name))
    return {"version": VERSION, "pods": [pod.to_json() for pod in ordered]}


def write_json_atomically(path: Path, document: Mapping[str, Any]) -> None:
    """Readers polling the file never see half of it: write a sibling, then rename over."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def write_inventory(state_dir: Path, pods: Iterable[PodRecord]) -> None:
    write_json_atomically(state_dir / INVENTORY_FILE, inventory_json(pods))
