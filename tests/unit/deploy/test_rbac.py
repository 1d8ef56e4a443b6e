"""istiod's RBAC grants exactly the verbs the code calls (rbac_usage, which KubeApi enforces at call time)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from istiod_lite.kube import rbac_usage
from istiod_lite.kube.manifests import render


def grants(rules: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], frozenset[str]]:
    table: dict[tuple[str, str], frozenset[str]] = {}
    for rule in rules:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                table[group, resource] = table.get((group, resource), frozenset()) | frozenset(rule["verbs"])
    return table


def rbac(kind: str, name: str = "istiod") -> dict[str, Any]:
    (found,) = [o for o in render() if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_the_cluster_role_is_exactly_the_cluster_wide_calls() -> None:
    assert grants(rbac("ClusterRole")["rules"]) == dict(rbac_usage.CLUSTER)


def test_the_namespaced_role_is_exactly_the_root_cert_calls() -> None:
    assert grants(rbac("Role")["rules"]) == dict(rbac_usage.ROOT_CERT_NAMESPACED)
    assert rbac("Role")["metadata"]["namespace"] == "istio-system"


def test_the_bindings_name_the_service_account_istiod_runs_as() -> None:
    (deployment,) = [o for o in render() if o["kind"] == "Deployment" and o["metadata"]["name"] == "istiod"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = rbac(kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": "istiod"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "istio-system"}]


def test_every_declared_call_is_granted_somewhere_and_nothing_else() -> None:
    granted = grants(rbac("ClusterRole")["rules"])
    for key, verbs in grants(rbac("Role")["rules"]).items():
        granted[key] = granted.get(key, frozenset()) | verbs
    assert granted == dict(rbac_usage.ISTIOD)


def test_the_node_agent_role_is_exactly_its_calls() -> None:
    assert grants(rbac("ClusterRole", "istio-cni")["rules"]) == dict(rbac_usage.NODE_AGENT)
    binding = rbac("ClusterRoleBinding", "istio-cni")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "istio-cni", "namespace": "istio-system"}]
    (daemonset,) = [o for o in render() if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "istio-cni-node"]
    assert daemonset["spec"]["template"]["spec"]["serviceAccountName"] == "istio-cni"


def test_ztunnel_gets_no_api_access() -> None:
    """ztunnel authenticates to istiod with its istio-ca token, never to the API server."""
    bound = {s["name"] for o in render() if o["kind"].endswith("Binding") for s in o["subjects"]}
    assert bound == {"istiod", "istio-cni"}
    (daemonset,) = [o for o in render() if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "ztunnel"]
    assert daemonset["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
