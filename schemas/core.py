"""Core Kubernetes kinds the mesh reads: Namespace, Service, ServiceAccount and apps/v1 Deployment.

Only the fields the mesh acts on are modelled. Real manifests carry many more (probes, resources,
volumes …); those listed in ``IGNORED_KEYS`` are accepted and dropped so ordinary manifests load,
while a misspelt field the mesh *does* read is still an error with a "did you mean".
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Mapping
from typing import ClassVar

import attrs

from schemas.common import LabelSelector, ObjectMeta, meta
from schemas.errors import Problem

PORT = meta(minimum=1, maximum=65535)
# IANA_SVC_NAME, what Kubernetes accepts for a named targetPort / container port name.
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


@attrs.frozen(kw_only=True)
class Namespace:
    """Labels carry the mesh enrolment (``istio.io/dataplane-mode: ambient``, ``istio.io/use-waypoint``)."""

    KIND: ClassVar[str] = "Namespace"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"spec", "status"})

    api_version: str = attrs.field(default="v1", metadata=meta(always=True))
    kind: str = attrs.field(default="Namespace", metadata=meta(always=True))
    metadata: ObjectMeta


@attrs.frozen(kw_only=True)
class ServiceAccount:
    """The workload identity: ``spiffe://<trust domain>/ns/<namespace>/sa/<name>``."""

    KIND: ClassVar[str] = "ServiceAccount"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"secrets", "imagePullSecrets", "automountServiceAccountToken"}
    )

    api_version: str = attrs.field(default="v1", metadata=meta(always=True))
    kind: str = attrs.field(default="ServiceAccount", metadata=meta(always=True))
    metadata: ObjectMeta


@attrs.frozen(kw_only=True)
class ServicePort:
    name: str | None = None
    protocol: Protocol = Protocol.TCP
    port: int = attrs.field(metadata=PORT)
    target_port: int | str | None = None  # a number, or the name of a container port
    app_protocol: str | None = None


@attrs.frozen(kw_only=True)
class ServiceSpec:
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "type",
            "clusterIPs",
            "sessionAffinity",
            "sessionAffinityConfig",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
            "externalTrafficPolicy",
            "publishNotReadyAddresses",
            "trafficDistribution",
        }
    )

    selector: Mapping[str, str] = attrs.field(factory=dict)
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str | None = attrs.field(default=None, metadata=meta(key="clusterIP"))


@attrs.frozen(kw_only=True)
class Service:
    KIND: ClassVar[str] = "Service"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default="v1", metadata=meta(always=True))
    kind: str = attrs.field(default="Service", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: ServiceSpec = attrs.field(factory=ServiceSpec)


@attrs.frozen(kw_only=True)
class ObjectFieldSelector:
    field_path: str
    api_version: str | None = None


@attrs.frozen(kw_only=True)
class EnvVarSource:
    UNSUPPORTED_KEYS: ClassVar[Mapping[str, str]] = {
        "secretKeyRef": "the local runner has no Secrets; put the value in `value`",
        "configMapKeyRef": "the local runner has no ConfigMaps; put the value in `value`",
        "resourceFieldRef": "the local runner does not model container resources",
    }

    field_ref: ObjectFieldSelector | None = None


@attrs.frozen(kw_only=True)
class EnvVar:
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


@attrs.frozen(kw_only=True)
class ContainerPort:
    name: str | None = None
    container_port: int = attrs.field(metadata=PORT)
    protocol: Protocol = Protocol.TCP


@attrs.frozen(kw_only=True)
class Container:
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "imagePullPolicy",
            "resources",
            "readinessProbe",
            "livenessProbe",
            "startupProbe",
            "volumeMounts",
            "securityContext",
            "workingDir",
            "lifecycle",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "stdin",
            "tty",
        }
    )

    name: str
    image: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[EnvVar, ...] = ()
    ports: tuple[ContainerPort, ...] = ()


@attrs.frozen(kw_only=True)
class PodSpec:
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "volumes",
            "securityContext",
            "imagePullSecrets",
            "affinity",
            "tolerations",
            "nodeSelector",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "dnsPolicy",
            "schedulerName",
            "priorityClassName",
            "automountServiceAccountToken",
            "serviceAccount",
        }
    )

    service_account_name: str | None = None
    node_name: str | None = None
    containers: tuple[Container, ...] = attrs.field(metadata=meta(min_items=1))


@attrs.frozen(kw_only=True)
class PodTemplateMeta:
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"creationTimestamp", "name", "namespace"})

    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class PodTemplateSpec:
    metadata: PodTemplateMeta = attrs.field(factory=PodTemplateMeta)
    spec: PodSpec


@attrs.frozen(kw_only=True)
class DeploymentSpec:
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"strategy", "revisionHistoryLimit", "progressDeadlineSeconds", "minReadySeconds", "paused"}
    )

    replicas: int = attrs.field(default=1, metadata=meta(minimum=0))
    selector: LabelSelector
    template: PodTemplateSpec


@attrs.frozen(kw_only=True)
class Deployment:
    KIND: ClassVar[str] = "Deployment"
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("apps/v1",)
    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"status"})

    api_version: str = attrs.field(default="apps/v1", metadata=meta(always=True))
    kind: str = attrs.field(default="Deployment", metadata=meta(always=True))
    metadata: ObjectMeta
    spec: DeploymentSpec


def _duplicates(names: list[str | None]) -> list[int]:
    counts = Counter(n for n in names if n is not None)
    return [i for i, n in enumerate(names) if n is not None and counts[n] > 1]


def check_service(svc: Service) -> list[Problem]:
    out: list[Problem] = []
    ports = svc.spec.ports
    for i, port in enumerate(ports):
        at = ("spec", "ports", i)
        if isinstance(port.target_port, int) and not 1 <= port.target_port <= 65535:
            out.append(Problem(path=(*at, "targetPort"), message=f"port {port.target_port} outside 1..65535"))
        if isinstance(port.target_port, str) and not PORT_NAME.match(port.target_port):
            message = f'"{port.target_port}" is neither a port number nor a port name (lowercase, 1-15 chars)'
            out.append(Problem(path=(*at, "targetPort"), message=message))
        if len(ports) > 1 and not port.name:
            out.append(Problem(path=(*at, "name"), message="a Service with several ports must name each one"))
    for i in _duplicates([p.name for p in ports]):
        out.append(
            Problem(path=("spec", "ports", i, "name"), message=f'duplicate port name "{ports[i].name}"')
        )
    return out


def check_deployment(deploy: Deployment) -> list[Problem]:
    out: list[Problem] = []
    template_labels = deploy.spec.template.metadata.labels
    for key, value in deploy.spec.selector.match_labels.items():
        if template_labels.get(key) != value:
            message = (
                f"selector {key}={value} does not match the template labels (spec.template.metadata.labels)"
            )
            out.append(Problem(path=("spec", "selector", "matchLabels"), message=message))
    if not deploy.spec.selector.match_labels:
        out.append(Problem(path=("spec", "selector", "matchLabels"), message="a Deployment needs a selector"))
    containers = deploy.spec.template.spec.containers
    for i in _duplicates([c.name for c in containers]):
        message = f'duplicate container name "{containers[i].name}"'
        out.append(Problem(path=("spec", "template", "spec", "containers", i, "name"), message=message))
    return out
