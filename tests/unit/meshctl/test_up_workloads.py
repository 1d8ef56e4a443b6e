"""Which pods and waypoints the resources call for, and what to stop/start to get there."""

from __future__ import annotations

import pytest

from meshctl.runner.workloads import PodPlan, desired_state, diff_pods
from schemas.load import load_text

NODES = ("node-1", "node-2")


def deployment(
    name: str = "search", *, replicas: int = 2, node: str | None = None, command: str = '[sleep, "60"]',
    env: str = "", namespace: str = "prod",
) -> str:
    pin = f"\n      nodeName: {node}" if node else ""
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}, version: v1}}}}
    spec:{pin}
      serviceAccountName: {name}-sa
      containers:
      - name: app
        command: {command}
        ports: [{{containerPort: 8080, name: http}}]{env}
"""


def resources(*documents: str) -> list[object]:
    result = load_text("---\n".join(documents), "test.yaml")
    assert result.ok, result.errors
    return list(result.resources)


def test_each_replica_is_a_stably_named_pod_with_the_template_s_identity() -> None:
    state = desired_state(resources(deployment(replicas=3)), NODES)
    assert sorted(state.pods) == ["prod/search-0", "prod/search-1", "prod/search-2"]
    pod = state.pods["prod/search-1"]
    assert pod.deployment == "search"
    assert pod.identity == "spiffe://cluster.local/ns/prod/sa/search-sa"
    assert pod.labels == {"app": "search", "version": "v1"}
    assert pod.container_ports == (("http", 8080),)
    assert state.problems == ()


def test_replicas_spread_over_every_node() -> None:
    state = desired_state(resources(deployment(replicas=4)), NODES)
    nodes = [state.pods[f"prod/search-{i}"].node for i in range(4)]
    assert sorted(nodes) == ["node-1", "node-1", "node-2", "node-2"]
    assert nodes[0] != nodes[1]


def test_node_name_pins_every_replica() -> None:
    state = desired_state(resources(deployment(replicas=3, node="node-2")), NODES)
    assert {pod.node for pod in state.pods.values()} == {"node-2"}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (deployment(node="node-9"), "nodeName 'node-9' is not a local node"),
        (deployment(command="[]"), "has neither command nor args"),
        (
            deployment(env="\n        env: [{name: X, valueFrom: {fieldRef: {fieldPath: status.hostIP}}}]"),
            "fieldRef 'status.hostIP' has no local value",
        ),
    ],
)
def test_a_deployment_that_cannot_run_is_named_and_the_others_still_run(document: str, expected: str) -> None:
    state = desired_state(resources(document, deployment("other", replicas=1)), NODES)
    assert list(state.pods) == ["prod/other-0"]
    assert len(state.problems) == 1
    assert "Deployment prod/search" in state.problems[0] and expected in state.problems[0]


def test_field_refs_become_downward_variable_references() -> None:
    env = "\n        env: [{name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}, {name: A, value: b}]"
    pod = desired_state(resources(deployment(replicas=1, env=env)), NODES).pods["prod/search-0"]
    assert pod.env == (("MY_IP", "$(POD_IP)"), ("A", "b"))


def test_only_istio_waypoint_gateways_are_waypoints() -> None:
    gateways = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: prod}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ingress, namespace: prod}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""
    state = desired_state(resources(gateways), NODES)
    assert list(state.waypoints) == ["prod/waypoint"]
    assert state.waypoints["prod/waypoint"].ports == (15008,)
    assert state.waypoints["prod/waypoint"].node in NODES


def plans(*documents: str) -> dict[str, PodPlan]:
    return desired_state(resources(*documents), NODES).pods


@pytest.mark.parametrize(
    ("before", "after", "start", "stop"),
    [
        ((), (deployment(replicas=2),), ["prod/search-0", "prod/search-1"], []),
        ((deployment(replicas=2),), (deployment(replicas=2),), [], []),
        ((deployment(replicas=2),), (deployment(replicas=1),), [], ["prod/search-1"]),
        ((deployment(replicas=1),), (deployment(replicas=3),), ["prod/search-1", "prod/search-2"], []),
        ((deployment(replicas=1),), (), [], ["prod/search-0"]),
        # an edited template replaces the pod: stopped, then started again under the same name
        ((deployment(replicas=1),), (deployment(replicas=1, command='[sleep, "99"]'),), ["prod/search-0"],
         ["prod/search-0"]),
    ],
)
def test_diff_pods(before: tuple[str, ...], after: tuple[str, ...], start: list[str], stop: list[str]) -> None:
    changes = diff_pods(plans(*before) if before else {}, plans(*after) if after else {})
    assert sorted(pod.key for pod in changes.start) == start
    assert sorted(changes.stop) == stop
