"""Waypoint objects and Gateway status from a Gateway, and when an existing object needs a patch."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.kube.waypoint_objects import (
    WaypointSettings,
    desired_objects,
    gateway_status,
    is_waypoint,
    needs_update,
    status_differs,
)

GATEWAY: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "wp", "namespace": "prod", "uid": "g-1", "generation": 3},
    "spec": {"gatewayClassName": "istio-waypoint"},
}
SETTINGS = WaypointSettings(image="img:1")


def test_only_the_waypoint_class_is_ours() -> None:
    assert is_waypoint(GATEWAY)
    assert not is_waypoint({**GATEWAY, "spec": {"gatewayClassName": "istio"}})
    assert not is_waypoint({"metadata": {"name": "x"}})


def test_every_object_is_named_labelled_and_owned_like_istios() -> None:
    objects = desired_objects(GATEWAY, SETTINGS)
    assert sorted(objects) == ["Deployment", "Service", "ServiceAccount"]
    for obj in objects.values():
        assert obj["metadata"]["name"] == "wp" and obj["metadata"]["namespace"] == "prod"
        assert obj["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"] == "wp"
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("Gateway", "wp", "g-1", True)
    pod = objects["Deployment"]["spec"]["template"]
    assert pod["metadata"]["labels"]["istio.io/dataplane-mode"] == "none"
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"] == objects["Service"]["spec"]["selector"]


DESIRED = {"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "template": {"x": [1, 2]}}}


@pytest.mark.parametrize(
    ("existing", "update"),
    [
        ({"metadata": {"labels": {"a": "1"}, "uid": "u"}, "spec": {"replicas": 1, "template": {"x": [1, 2]},
                                                                     "strategy": {}}}, False),
        ({"metadata": {"labels": {"a": "1", "team": "x"}}, "spec": {"replicas": 1, "template": {"x": [1, 2]}}}, False),
        ({"metadata": {"labels": {"a": "2"}}, "spec": {"replicas": 1, "template": {"x": [1, 2]}}}, True),
        ({"metadata": {}, "spec": {"replicas": 1, "template": {"x": [1, 2]}}}, True),
        ({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 0, "template": {"x": [1, 2]}}}, True),
        ({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1, "template": {"x": [2]}}}, True),
        ({"metadata": {"labels": {"a": "1"}}}, True),
    ],
)
def test_needs_update_compares_only_what_we_set(existing: dict[str, Any], update: bool) -> None:
    assert needs_update(existing, DESIRED) is update


def test_status_programmed_once_the_service_exists_and_transition_times_kept() -> None:
    pending = gateway_status(GATEWAY, None, "T1")
    assert [(c["type"], c["status"]) for c in pending["conditions"]] == [("Accepted", "True"), ("Programmed", "False")]
    assert all(c["observedGeneration"] == 3 for c in pending["conditions"])
    with_status = {**GATEWAY, "status": pending}
    service = {"spec": {"clusterIP": "10.96.1.1"}}
    ready = gateway_status(with_status, service, "T2")
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"Accepted": "T1", "Programmed": "T2"}  # Accepted did not change, so its time is kept
    assert ready["addresses"] == [{"type": "IPAddress", "value": "10.96.1.1"}]
    settled = {**GATEWAY, "status": {**ready, "listeners": [{"name": "other-controller's"}]}}
    assert not status_differs(settled, gateway_status(settled, service, "T3"))
