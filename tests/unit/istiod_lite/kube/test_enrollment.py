"""Which pods a node agent captures, and how a change of the wanted set becomes adds and removals."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.kube.enrollment import EnrolledPod, desired, plan, redirection_patch, should_capture

AMBIENT = {"istio.io/dataplane-mode": "ambient"}


def pod(labels: dict[str, str] | None = None, **overrides: Any) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1", "labels": labels or {}, "annotations": {}},
        "spec": {"nodeName": "node-a", "serviceAccountName": "web"},
        "status": {"podIP": "10.0.0.5", "phase": "Running"},
    }
    for path, value in overrides.items():
        section, key = path.split("__")
        manifest[section][key] = value
    return manifest


@pytest.mark.parametrize(
    ("manifest", "namespace_labels", "captured"),
    [
        (pod(), AMBIENT, True),
        (pod(), {}, False),
        (pod({"istio.io/dataplane-mode": "ambient"}), {}, True),
        (pod({"istio.io/dataplane-mode": "none"}), AMBIENT, False),  # the pod opts out of its namespace
        (pod(spec__nodeName="node-b"), AMBIENT, False),  # another node's agent does it
        (pod(status__podIP=None), AMBIENT, False),  # nothing to redirect yet
        (pod(spec__hostNetwork=True), AMBIENT, False),  # the host's namespace is not the pod's
        (pod(status__phase="Succeeded"), AMBIENT, False),
        (pod(metadata__annotations={"sidecar.istio.io/status": "{}"}), AMBIENT, False),
    ],
)
def test_should_capture(manifest: dict[str, Any], namespace_labels: dict[str, str], captured: bool) -> None:
    assert should_capture(manifest, namespace_labels, "node-a") is captured


def test_desired_uses_each_pods_namespace_labels() -> None:
    other = pod()
    other["metadata"] = {**other["metadata"], "name": "db-0", "namespace": "data", "uid": "u2"}
    namespaces: dict[str, dict[str, Any]] = {"shop": {"metadata": {"labels": AMBIENT}}, "data": {"metadata": {}}}
    assert desired([pod(), other], namespaces, "node-a") == {
        "u1": EnrolledPod(uid="u1", name="web-0", namespace="shop", ip="10.0.0.5", service_account="web")
    }


A = EnrolledPod("u1", "a", "ns", "10.0.0.1", "sa")
B = EnrolledPod("u2", "b", "ns", "10.0.0.2", "sa")
B_MOVED = EnrolledPod("u2", "b", "ns", "10.0.0.9", "sa")


@pytest.mark.parametrize(
    ("wanted", "captured", "adds", "removes"),
    [
        ({"u1": A}, {}, [A], []),
        ({}, {"u1": A}, [], [A]),
        ({"u1": A, "u2": B}, {"u1": A, "u2": B}, [], []),
        ({"u2": B_MOVED}, {"u2": B}, [B_MOVED], [B]),  # released and captured again
    ],
)
def test_plan(wanted: dict[str, EnrolledPod], captured: dict[str, EnrolledPod], adds: list[EnrolledPod],
              removes: list[EnrolledPod]) -> None:
    assert plan(wanted, captured) == (adds, removes)


def test_the_annotation_patch_sets_and_removes() -> None:
    assert redirection_patch(True) == {"metadata": {"annotations": {"ambient.istio.io/redirection": "enabled"}}}
    assert redirection_patch(False) == {"metadata": {"annotations": {"ambient.istio.io/redirection": None}}}
