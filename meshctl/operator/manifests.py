"""Pure builders of the resources the operator verbs apply (no I/O; table-tested).

The verbs write ordinary Istio and Kubernetes YAML through the same apply path as ``meshctl apply``,
so what they do is visible with ``meshctl get`` and reversible with ``meshctl delete``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

DATAPLANE_MODE = "istio.io/dataplane-mode"
AMBIENT = "ambient"
_WEIGHT = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)=(\d{1,3})$")


class CanarySpecError(ValueError):
    """Weights that Istio would refuse; the message says how to write them."""


@attrs.frozen
class SubsetWeight:
    subset: str
    weight: int


def parse_weights(items: Sequence[str]) -> list[SubsetWeight]:
    """``v1=95 v2=5`` → subset weights; they must be whole numbers summing to 100, names unique."""
    if not items:
        raise CanarySpecError("give at least one SUBSET=WEIGHT, e.g. v1=95 v2=5")
    weights: list[SubsetWeight] = []
    for item in items:
        match = _WEIGHT.match(item)
        if match is None:
            raise CanarySpecError(f"{item!r} is not SUBSET=WEIGHT (lower-case name, whole-number weight), e.g. v2=5")
        weights.append(SubsetWeight(match.group(1), int(match.group(3))))
    names = [w.subset for w in weights]
    if len(set(names)) != len(names):
        raise CanarySpecError(f"subset named twice in {' '.join(items)}")
    total = sum(w.weight for w in weights)
    if total != 100:
        raise CanarySpecError(f"weights add up to {total}, not 100 ({' '.join(items)})")
    return weights


def canary_resources(
    service: str, namespace: str, weights: Sequence[SubsetWeight], *, host: str | None = None,
    label: str = "version",
) -> list[dict[str, Any]]:
    """A VirtualService splitting ``host`` (default: the service's FQDN) over subsets of ``service``,
    and the DestinationRule defining each subset by the ``label`` of the same name (Istio's canary).

    Both are named after the service, so setting new weights updates them in place instead of
    binding a second VirtualService to the same host (which Istio leaves undefined).
    """
    fqdn = f"{service}.{namespace}.svc.cluster.local"
    name = service
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host or fqdn],
            "http": [
                {
                    "route": [
                        {"destination": {"host": fqdn, "subset": w.subset}, "weight": w.weight} for w in weights
                    ]
                }
            ],
        },
    }
    destination_rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"host": fqdn, "subsets": [{"name": w.subset, "labels": {label: w.subset}} for w in weights]},
    }
    return [virtual_service, destination_rule]


def namespace_with_labels(
    existing: Mapping[str, Any] | None, namespace: str, labels: Mapping[str, str | None]
) -> dict[str, Any]:
    """The Namespace with ``labels`` set (a ``None`` value removes that label), other fields kept."""
    manifest: dict[str, Any] = (
        copy.deepcopy(dict(existing)) if existing else {"apiVersion": "v1", "kind": "Namespace", "metadata": {}}
    )
    metadata = manifest.setdefault("metadata", {})
    metadata["name"] = namespace
    merged = dict(metadata.get("labels") or {})
    for key, value in labels.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    metadata["labels"] = merged
    return manifest


def namespace_with_mode(existing: Mapping[str, Any] | None, namespace: str, *, enrolled: bool) -> dict[str, Any]:
    """The Namespace with ``istio.io/dataplane-mode: ambient`` set or removed, other fields kept."""
    return namespace_with_labels(existing, namespace, {DATAPLANE_MODE: AMBIENT if enrolled else None})
