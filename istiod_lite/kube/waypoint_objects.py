"""What a waypoint ``Gateway`` turns into, as Istio's deployment controller does it (sans-IO).

For a Gateway with ``gatewayClassName: istio-waypoint``: a ServiceAccount (the waypoint's identity,
``spiffe://<td>/ns/<ns>/sa/<gateway>``), a Deployment and a Service, all named after the Gateway, labelled
``gateway.networking.k8s.io/gateway-name: <gateway>`` (which is also the Service selector), the pods
``istio.io/dataplane-mode: none`` (a waypoint is not itself captured by ztunnel), and each owned by the
Gateway (``ownerReferences`` with ``controller: true``) so deleting the Gateway deletes them. The Gateway's
status gets ``Accepted`` and ``Programmed`` conditions and the Service's address.

:func:`needs_update` compares only the fields we set, so server defaults and other controllers' fields
never cause a write loop; :func:`gateway_status` keeps ``lastTransitionTime`` when a condition's status
did not change, so reconciling an unchanged Gateway writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

WAYPOINT_CLASS = "istio-waypoint"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
MANAGED_LABEL = "gateway.istio.io/managed"
MANAGED_BY = "istio.io-mesh-controller"
HBONE_PORT = 15008
STATUS_PORT = 15021


@attrs.frozen(kw_only=True)
class WaypointSettings:
    """What every waypoint Deployment shares; set from ``meshctl install`` values."""

    image: str
    trust_domain: str = "cluster.local"
    istiod_address: str = "istiod.istio-system.svc:15012"
    log_level: str = "info"
    image_pull_policy: str = "IfNotPresent"


def is_waypoint(gateway: Mapping[str, Any]) -> bool:
    return (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def _owner(gateway: Mapping[str, Any]) -> dict[str, Any]:
    metadata = gateway["metadata"]
    return {
        "apiVersion": str(gateway.get("apiVersion") or "gateway.networking.k8s.io/v1"),
        "kind": "Gateway",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(gateway: Mapping[str, Any]) -> dict[str, Any]:
    metadata = gateway["metadata"]
    return {
        "name": metadata["name"],
        "namespace": metadata.get("namespace") or "default",
        "labels": {GATEWAY_NAME_LABEL: metadata["name"], MANAGED_LABEL: MANAGED_BY},
        "ownerReferences": [_owner(gateway)],
    }


def desired_objects(gateway: Mapping[str, Any], settings: WaypointSettings) -> dict[str, dict[str, Any]]:
    """Kind → the object we want for this waypoint Gateway (ServiceAccount, Deployment, Service)."""
    name = gateway["metadata"]["name"]
    namespace = gateway["metadata"].get("namespace") or "default"
    identity = f"spiffe://{settings.trust_domain}/ns/{namespace}/sa/{name}"
    pod_labels = {GATEWAY_NAME_LABEL: name, DATAPLANE_MODE_LABEL: "none", "service.istio.io/canonical-name": name}
    container = {
        "name": "waypoint",
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": [
            "python", "-m", "waypoint",
            "--address", "$(POD_IP)",
            "--identity", identity,
            "--istiod", f"wss://{settings.istiod_address}",
            "--token-file", "/var/run/secrets/tokens/istio-token",
            "--root-cert", "/var/run/secrets/istio/root-cert.pem",
            "--log-level", settings.log_level,
        ],
        # its own ServiceAccount token (audience istio-ca) is what the CA accepts for its own identity
        "volumeMounts": [
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio", "readOnly": True},
        ],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [
            {"name": "mesh", "containerPort": HBONE_PORT, "protocol": "TCP"},
            {"name": "status-port", "containerPort": STATUS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": STATUS_PORT}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1337,
                            "capabilities": {"drop": ["ALL"]}},
    }
    return {
        "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(gateway)},
        "Deployment": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(gateway),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {GATEWAY_NAME_LABEL: name}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [container],
                        "volumes": [
                            {"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
                                "audience": "istio-ca", "expirationSeconds": 43200, "path": "istio-token"}}]}},
                            {"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}},
                        ],
                    },
                },
            },
        },
        "Service": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(gateway),
            "spec": {
                "selector": {GATEWAY_NAME_LABEL: name},
                "ports": [
                    {"name": "mesh", "port": HBONE_PORT, "targetPort": HBONE_PORT, "protocol": "TCP"},
                    {"name": "status-port", "port": STATUS_PORT, "targetPort": STATUS_PORT, "protocol": "TCP"},
                ],
            },
        },
    }


def needs_update(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether any field we set differs in ``existing`` (fields we do not set are not ours to compare)."""
    for key, want in desired.items():
        if key in ("apiVersion", "kind"):
            continue
        have = existing.get(key)
        if isinstance(want, Mapping) and key != "labels":
            if not isinstance(have, Mapping) or needs_update(have, want):
                return True
        elif isinstance(want, Mapping):  # labels: ours must be present, others may be added
            if not isinstance(have, Mapping) or any(have.get(k) != v for k, v in want.items()):
                return True
        elif have != want:
            return True
    return False


def _condition(
    kind: str, status: bool, reason: str, message: str, generation: int, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    value = "True" if status else "False"
    unchanged = previous.get("status") == value
    return {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": previous.get("lastTransitionTime", now) if unchanged else now,
    }


def gateway_status(gateway: Mapping[str, Any], service: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The Gateway's ``status``: Accepted once we own it; Programmed once its Service exists (with its address)."""
    generation = int(gateway["metadata"].get("generation") or 1)
    previous = {c.get("type"): c for c in ((gateway.get("status") or {}).get("conditions") or [])}
    namespace = gateway["metadata"].get("namespace") or "default"
    name = gateway["metadata"]["name"]
    conditions = [
        _condition("Accepted", True, "Accepted", "Resource accepted", generation, previous.get("Accepted", {}), now),
    ]
    addresses: list[dict[str, str]] = []
    if service is None:
        conditions.append(_condition("Programmed", False, "Pending", "waypoint Service not created yet",
                                     generation, previous.get("Programmed", {}), now))
    else:
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            addresses.append({"type": "IPAddress", "value": str(cluster_ip)})
        else:
            addresses.append({"type": "Hostname", "value": f"{name}.{namespace}.svc.cluster.local"})
        conditions.append(_condition("Programmed", True, "Programmed", "Resource programmed, assigned to service(s) "
                                     f"{name}.{namespace}.svc.cluster.local:{HBONE_PORT}",
                                     generation, previous.get("Programmed", {}), now))
    return {"conditions": conditions, "addresses": addresses}


def status_differs(gateway: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether the fields we own (conditions, addresses) differ; other status fields are not ours."""
    current = gateway.get("status") or {}
    return any(current.get(key) != value for key, value in status.items())
