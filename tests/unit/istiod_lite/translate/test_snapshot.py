"""The push form of a snapshot: every type decodes in its consumer, and translation is deterministic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from istiod_lite.translate import VipAllocator, translate, translate_to_push
from schemas.kinds import Resource
from tests.unit.istiod_lite.translate.helpers import load
from tests.unit.istiod_lite.translate.test_canary import CANARY_VS, MESH, PODS
from waypoint.pushed import WaypointViewDecodeError, from_json
from ztunnel.state import ProxyState

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: search, namespace: prod}
spec:
  replicas: 2
  selector: {matchLabels: {app: search}}
  template:
    metadata: {labels: {app: search}}
    spec:
      nodeName: node-1
      serviceAccountName: search
      containers: [{name: app, command: [sleep], ports: [{name: http, containerPort: 9000}]}]
"""


def _resources() -> list[Resource]:
    return [*load(MESH), *load(CANARY_VS, namespace="prod")]


def test_to_push_has_the_four_push_types_and_ztunnel_accepts_its_three() -> None:
    pushed = json.loads(json.dumps(translate(_resources(), PODS).to_push()))
    assert set(pushed) == {"workload", "service", "authorization", "waypoint"}
    state = ProxyState()
    for type_name in ("workload", "service", "authorization"):
        state.apply(type_name, list(pushed[type_name].values()), replace=True)
    assert len(state.workloads()) == len(PODS)
    for key, body in pushed["waypoint"].items():
        assert from_json(body).key == key


def test_translation_is_deterministic_byte_for_byte() -> None:
    first = json.dumps(translate(_resources(), PODS).to_push(), sort_keys=True)
    second = json.dumps(translate(list(reversed(_resources())), list(reversed(PODS))).to_push(),
                        sort_keys=True)
    assert first == second


def test_translate_to_push_derives_pods_from_deployments_until_the_runner_reports_them() -> None:
    pushed = translate_to_push(load(DEPLOYMENT))
    workloads = pushed["workload"]
    assert sorted(workloads) == ["Kubernetes//Pod/prod/search-0", "Kubernetes//Pod/prod/search-1"]
    body = workloads["Kubernetes//Pod/prod/search-0"]
    assert (body["node"], body["service_account"]) == ("node-1", "search")
    assert "addresses" not in body


def test_vip_allocator_passed_in_is_the_one_used() -> None:
    allocator = VipAllocator("240.240.7.0/24")
    snapshot = translate(_resources(), PODS, vip_allocator=allocator)
    assert all(v.address.startswith("240.240.7.") for s in snapshot.services.values() for v in s.vips)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda body: body.update(surprise=1),  # unknown key
        lambda body: body["route_tables"][0]["routes"][0]["action"].update(teleport={}),  # two actions
        lambda body: body["clusters"][0]["endpoints"][0].update(weight=0),  # model validation
    ],
)
def test_a_malformed_waypoint_body_is_one_decode_error(mutate: Callable[[dict[str, Any]], None]) -> None:
    body = json.loads(json.dumps(translate(_resources(), PODS).to_push()["waypoint"]["prod/waypoint"]))
    mutate(body)
    with pytest.raises(WaypointViewDecodeError, match="prod/waypoint"):
        from_json(body)
