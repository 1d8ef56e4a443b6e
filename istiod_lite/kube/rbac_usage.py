"""Every Kubernetes API call istiod_lite makes, by the part of the code that makes it, in RBAC's terms.

:class:`~istiod_lite.kube.api.KubeApi` refuses any call not declared here (``UndeclaredApiCall``), so this
table is complete by construction for every code path the tests exercise; the deploy/ ClusterRole and Role
are checked against it (tests/unit/deploy/test_rbac.py), so RBAC grants exactly these verbs — no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from istiod_lite.kube.api import RESOURCES, Permissions
from istiod_lite.kube.store import WATCHED_KINDS


def _grant(kinds: Iterable[str], verbs: Iterable[str], subresource: str = "") -> dict[tuple[str, str], frozenset[str]]:
    grants = {}
    for kind in kinds:
        resource = RESOURCES[kind]
        name = f"{resource.plural}/{subresource}" if subresource else resource.plural
        grants[resource.group, name] = frozenset(verbs)
    return grants


STORE: Permissions = _grant(WATCHED_KINDS, ("list", "watch"))
"""istiod_lite.kube.store: a reflector (list, then watch) per watched kind."""

TOKEN_REVIEW: Permissions = {**_grant(["TokenReview"], ("create",)), **_grant(["Pod"], ("get",))}
"""istiod_lite.kube.tokenreview: review the bearer token, then read the caller pod's node."""

WAYPOINT_CONTROLLER: Permissions = {
    **_grant(["ServiceAccount", "Deployment", "Service"], ("get", "create", "patch")),
    **_grant(["Gateway"], ("patch",), "status"),
}
"""istiod_lite.kube.waypoint_controller: own a ServiceAccount, Deployment and Service per waypoint Gateway."""

ROOT_CERT_NAMESPACED: Permissions = _grant(["ConfigMap"], ("get", "create", "patch"))
"""istiod_lite.kube.root_cert: publish ``istio-ca-root-cert`` in istiod's own namespace (a Role, not cluster-wide)."""


NODE_AGENT: Permissions = {**_grant(["Namespace"], ("list", "watch")), **_grant(["Pod"], ("list", "watch", "patch"))}
"""istiod_lite.kube.node_enrollment: its node's pods and the namespaces' labels; annotate captured pods."""


def merge(*tables: Permissions) -> dict[tuple[str, str], frozenset[str]]:
    merged: dict[tuple[str, str], frozenset[str]] = {}
    for table in tables:
        for key, verbs in table.items():
            merged[key] = merged.get(key, frozenset()) | verbs
    return merged


CLUSTER: Mapping[tuple[str, str], frozenset[str]] = merge(STORE, TOKEN_REVIEW, WAYPOINT_CONTROLLER)
"""What the istiod ClusterRole must grant."""

ISTIOD: Mapping[tuple[str, str], frozenset[str]] = merge(CLUSTER, ROOT_CERT_NAMESPACED)
"""Everything istiod_lite's KubeApi may call (cluster-wide plus its own namespace)."""
