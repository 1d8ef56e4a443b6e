"""Which pods and waypoints the mesh's resources call for, as plain data (no processes, no I/O).

`meshctl up` keeps the running processes in step with this: each Deployment wants ``replicas`` pods
named ``<deployment>-<index>`` (stable names, so a restart or a re-read keeps addresses and logs), each
on its template's ``nodeName`` or spread over the local nodes; each Gateway of class
``istio-waypoint`` wants one waypoint. A pod's ``fingerprint`` covers everything that shapes its
process, so an edited template replaces the pod while an unchanged one is left alone.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from meshcore.errors import MeshError
from schemas import core
from schemas.common import namespace_of
from schemas.gateway import Gateway

WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"

# Kubernetes downward-API fields the local runner can fill; a fieldRef becomes a $(VAR) reference.
FIELD_REFS: Mapping[str, str] = {
    "status.podIP": "$(POD_IP)",
    "metadata.name": "$(POD_NAME)",
    "metadata.namespace": "$(POD_NAMESPACE)",
    "spec.serviceAccountName": "$(SERVICE_ACCOUNT)",
    "spec.nodeName": "$(NODE_NAME)",
}


class WorkloadPlanError(MeshError):
    hint = "{advice}"


@attrs.frozen(kw_only=True)
class PodPlan:
    """One pod the resources call for (its address is the runner's business, not the plan's)."""

    namespace: str
    name: str
    deployment: str
    node: str
    service_account: str
    labels: Mapping[str, str]
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    container_ports: tuple[tuple[str | None, int], ...]
    fingerprint: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def identity(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@attrs.frozen(kw_only=True)
class WaypointPlan:
    namespace: str
    name: str
    node: str
    ports: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _node_for(namespace: str, deployment: str, index: int, nodes: Sequence[str]) -> str:
    """Spread replicas round-robin from a per-Deployment start, so small apps still use every node."""
    start = zlib.crc32(f"{namespace}/{deployment}".encode())
    return nodes[(start + index) % len(nodes)]


def _env(container: core.Container) -> tuple[tuple[str, str], ...]:
    entries: list[tuple[str, str]] = []
    for var in container.env:
        if var.value is not None:
            entries.append((var.name, var.value))
        elif var.value_from is not None and var.value_from.field_ref is not None:
            path = var.value_from.field_ref.field_path
            reference = FIELD_REFS.get(path)
            if reference is None:
                known = ", ".join(sorted(FIELD_REFS))
                raise WorkloadPlanError(
                    f"env {var.name}: fieldRef {path!r} has no local value", advice=f"use one of {known}"
                )
            entries.append((var.name, reference))
        else:
            entries.append((var.name, ""))
    return tuple(entries)


def _fingerprint(parts: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=list).encode()).hexdigest()[:16]


def pods_for(deployment: core.Deployment, nodes: Sequence[str]) -> list[PodPlan]:
    """The pods of one Deployment; raises :class:`WorkloadPlanError` when it cannot run locally."""
    namespace = namespace_of(deployment.metadata)
    name = deployment.metadata.name
    spec = deployment.spec.template.spec
    container = spec.containers[0]
    where = f"Deployment {namespace}/{name}"
    if not container.command and not container.args:
        raise WorkloadPlanError(
            f"{where}: container {container.name!r} has neither command nor args",
            advice="locally the image is not run; give the command to start in `command`/`args`",
        )
    if spec.node_name is not None and spec.node_name not in nodes:
        raise WorkloadPlanError(
            f"{where}: nodeName {spec.node_name!r} is not a local node",
            advice=f"the local nodes are {', '.join(nodes)} (`meshctl up --nodes N` adds more)",
        )
    try:
        env = _env(container)
    except WorkloadPlanError as exc:
        raise WorkloadPlanError(f"{where}: {exc.message}", advice=exc.context.get("advice", "")) from None
    service_account = spec.service_account_name or "default"
    labels = dict(deployment.spec.template.metadata.labels)
    ports = tuple((port.name, port.container_port) for port in container.ports)
    fingerprint = _fingerprint(
        {
            "command": container.command,
            "args": container.args,
            "env": env,
            "sa": service_account,
            "labels": sorted(labels.items()),
            "ports": ports,
            "node": spec.node_name,
        }
    )
    return [
        PodPlan(
            namespace=namespace,
            name=f"{name}-{index}",
            deployment=name,
            node=spec.node_name or _node_for(namespace, name, index, nodes),
            service_account=service_account,
            labels=labels,
            command=container.command,
            args=container.args,
            env=env,
            container_ports=ports,
            fingerprint=fingerprint,
        )
        for index in range(deployment.spec.replicas)
    ]


@attrs.frozen
class DesiredState:
    pods: dict[str, PodPlan]
    waypoints: dict[str, WaypointPlan]
    problems: tuple[str, ...]


def desired_state(resources: Sequence[object], nodes: Sequence[str]) -> DesiredState:
    """Pods and waypoints for a set of typed resources; a Deployment that cannot run is a problem,
    reported by name, and does not stop the others."""
    pods: dict[str, PodPlan] = {}
    waypoints: dict[str, WaypointPlan] = {}
    problems: list[str] = []
    for resource in resources:
        if isinstance(resource, core.Deployment):
            try:
                planned = pods_for(resource, nodes)
            except WorkloadPlanError as exc:
                problems.append(str(exc))
                continue
            pods.update((pod.key, pod) for pod in planned)
        elif isinstance(resource, Gateway) and resource.spec.gateway_class_name == WAYPOINT_CLASS:
            namespace = namespace_of(resource.metadata)
            name = resource.metadata.name
            waypoint = WaypointPlan(
                namespace=namespace,
                name=name,
                node=_node_for(namespace, name, 0, nodes),
                ports=tuple(listener.port for listener in resource.spec.listeners),
            )
            waypoints[waypoint.key] = waypoint
    return DesiredState(pods=pods, waypoints=waypoints, problems=tuple(problems))


@attrs.frozen
class PodChanges:
    start: tuple[PodPlan, ...]
    stop: tuple[str, ...]  # keys


def diff_pods(running: Mapping[str, PodPlan], desired: Mapping[str, PodPlan]) -> PodChanges:
    """What to stop and start so ``running`` becomes ``desired``; a changed pod is stopped then started."""
    stop = [key for key, pod in running.items() if key not in desired or desired[key].fingerprint != pod.fingerprint]
    start = [pod for key, pod in desired.items() if key not in running or key in stop]
    return PodChanges(start=tuple(start), stop=tuple(stop))
