"""Shared builders for translation tests: YAML → typed resources (through the real loader), pods."""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs

from istiod_lite.translate import MeshSnapshot, PodInfo
from schemas.kinds import Resource
from schemas.load import load_text
from ztunnel.authz import ConnectionInfo, evaluate
from ztunnel.state import ProxyState


def load(text: str, *, namespace: str | None = None) -> list[Resource]:
    """Load YAML the way ``meshctl apply -f … [-n NS]`` does: errors fail the test, ``-n`` fills
    in the namespace of resources that name none."""
    result = load_text(text, "test.yaml")
    assert result.ok, [str(e) for e in result.errors]
    out: list[Resource] = []
    for resource in result.resources:
        if namespace is not None and resource.metadata.namespace is None and resource.kind != "Namespace":
            resource = attrs.evolve(resource, metadata=attrs.evolve(resource.metadata, namespace=namespace))
        out.append(resource)
    return out


def pod(
    name: str,
    namespace: str = "prod",
    ip: str | None = "10.0.0.1",
    *,
    labels: Mapping[str, str] | None = None,
    node: str = "node-0",
    service_account: str = "default",
    deployment: str = "",
    container_ports: Mapping[str, int] | None = None,
) -> PodInfo:
    return PodInfo(
        name=name,
        namespace=namespace,
        ip=ip,
        node=node,
        labels=dict(labels or {}),
        service_account=service_account,
        deployment=deployment,
        container_ports=dict(container_ports or {}),
    )


def ztunnel_decides(
    snapshot: MeshSnapshot, uid: str, *, port: int, source_identity: str | None = None, source_ip: str = "10.9.9.9"
) -> bool:
    """What a ztunnel fed this snapshot (through the push JSON) decides for a connection to ``uid``."""
    state = ProxyState()
    pushed = json.loads(json.dumps(snapshot.to_push()))  # what goes over the wire
    for type_name in ("workload", "service", "authorization"):
        state.apply(type_name, list(pushed[type_name].values()), replace=True)
    workload = state.workload(uid)
    assert workload is not None, uid
    conn = ConnectionInfo(
        source_ip=source_ip,
        destination_ip=workload.addresses[0],
        destination_port=port,
        source_identity=source_identity,
    )
    return evaluate(conn, state.policies_for(workload)).allowed
