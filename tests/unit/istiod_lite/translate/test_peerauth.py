"""PeerAuthentication STRICT → a DENY of traffic without a principal, with Istio's precedence
(workload selector > namespace > mesh-wide in the root namespace; UNSET inherits) and port-level
exceptions. Checked through a ztunnel fed the pushed JSON: plaintext (no identity) vs mTLS."""

from __future__ import annotations

import pytest

from istiod_lite.translate import translate
from schemas.discovery import Action, Scope
from tests.unit.istiod_lite.translate.helpers import load, pod, ztunnel_decides

UID = "Kubernetes//Pod/prod/api-0"
PEER = "spiffe://cluster.local/ns/foo/sa/client"


def _pa(name: str, namespace: str, mode: str | None, *, selector: bool = False, ports: str = "") -> str:
    spec = "  selector: {matchLabels: {app: api}}\n" if selector else ""
    if mode:
        spec += f"  mtls: {{mode: {mode}}}\n"
    if ports:
        spec += f"  portLevelMtls: {{{ports}}}\n"
    return (
        f"apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec or '  {}'}\n"
    ).replace("spec:\n  {}", "spec: {}")


MESH_STRICT = _pa("default", "istio-system", "STRICT")
NS_STRICT = _pa("default", "prod", "STRICT")
NS_PERMISSIVE = _pa("default", "prod", "PERMISSIVE")


@pytest.mark.parametrize(
    ("docs", "plaintext_allowed"),
    [
        ([], True),  # nothing said: PERMISSIVE
        ([MESH_STRICT], False),  # mesh-wide STRICT
        ([NS_STRICT], False),  # namespace-wide STRICT
        ([MESH_STRICT, NS_PERMISSIVE], True),  # the namespace overrides the mesh
        ([NS_STRICT, _pa("api", "prod", "PERMISSIVE", selector=True)], True),  # the workload overrides both
        ([NS_PERMISSIVE, _pa("api", "prod", "STRICT", selector=True)], False),
        ([MESH_STRICT, _pa("default", "prod", None)], False),  # UNSET inherits
        ([NS_STRICT, _pa("api", "prod", "UNSET", selector=True)], False),
        ([_pa("default", "prod", "DISABLE")], True),  # DISABLE cannot turn ambient mTLS off: nothing enforced
        ([_pa("default", "other", "STRICT")], True),  # another namespace's policy
    ],
)
def test_peer_authentication_strict_denies_traffic_without_a_principal(
    docs: list[str], plaintext_allowed: bool
) -> None:
    snapshot = translate(load("---\n".join(docs)) if docs else [], [pod("api-0", labels={"app": "api"})])
    assert ztunnel_decides(snapshot, UID, port=8080) is plaintext_allowed
    assert ztunnel_decides(snapshot, UID, port=8080, source_identity=PEER)  # mTLS is always fine


def test_strict_becomes_the_shared_static_deny_policy() -> None:
    snapshot = translate(load(NS_STRICT), [pod("api-0", labels={"app": "api"})])
    (key,) = snapshot.workloads[UID].authorization_policies
    policy = snapshot.authorizations[key]
    assert key == "istio-system/istio_converted_static_strict"
    assert (policy.scope, policy.action) == (Scope.WORKLOAD_SELECTOR, Action.DENY)
    assert policy.rules[0].clauses[0].matches[0].not_principals[0].presence


@pytest.mark.parametrize(
    ("docs", "port", "plaintext_allowed"),
    [
        # STRICT workload with a PERMISSIVE port: plaintext only there
        ([_pa("api", "prod", "STRICT", selector=True, ports="9090: {mode: PERMISSIVE}")], 9090, True),
        ([_pa("api", "prod", "STRICT", selector=True, ports="9090: {mode: PERMISSIVE}")], 8080, False),
        # inherited STRICT with a PERMISSIVE port
        ([NS_STRICT, _pa("api", "prod", None, selector=True, ports="9090: {mode: PERMISSIVE}")], 9090, True),
        ([NS_STRICT, _pa("api", "prod", None, selector=True, ports="9090: {mode: PERMISSIVE}")], 8080, False),
        # PERMISSIVE workload with a STRICT port: plaintext everywhere but there
        ([_pa("api", "prod", "PERMISSIVE", selector=True, ports="9090: {mode: STRICT}")], 9090, False),
        ([_pa("api", "prod", "PERMISSIVE", selector=True, ports="9090: {mode: STRICT}")], 8080, True),
    ],
)
def test_port_level_mtls_is_honoured(docs: list[str], port: int, plaintext_allowed: bool) -> None:
    snapshot = translate(load("---\n".join(docs)), [pod("api-0", labels={"app": "api"})])
    assert ztunnel_decides(snapshot, UID, port=port) is plaintext_allowed
    assert snapshot.workloads[UID].authorization_policies == ("prod/converted_peer_authentication_api",)


def test_a_selector_peer_authentication_applies_to_the_selected_workloads_only() -> None:
    docs = _pa("api", "prod", "STRICT", selector=True)
    pods = [pod("api-0", labels={"app": "api"}), pod("web-0", ip="10.0.0.2", labels={"app": "web"})]
    snapshot = translate(load(docs), pods)
    assert not ztunnel_decides(snapshot, UID, port=80)
    assert ztunnel_decides(snapshot, "Kubernetes//Pod/prod/web-0", port=80)


def test_selector_policies_in_the_root_namespace_are_not_workload_policies() -> None:
    docs = _pa("api", "istio-system", "STRICT", selector=True)
    snapshot = translate(load(docs), [pod("api-0", "istio-system", labels={"app": "api"})])
    assert ztunnel_decides(snapshot, "Kubernetes//Pod/istio-system/api-0", port=80)
