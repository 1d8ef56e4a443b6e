"""CA authentication against the API emulator: TokenReview, the ztunnel ServiceAccount rule, node binding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.csr_service import CsrService, NodeNotAuthorized, StaticPlacement
from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import RESOURCES, KubeApi
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.tokenreview import TokenRefused, TokenReviewAuthenticator
from istiod_lite.translate.inputs import PodInfo
from meshcore.identity.ca_wire import CsrRequest
from tests.integration.test_kube_store import ADMIN, connect, emulator_url, pod
from tests.support.processes import Spawner
from tests.unit.istiod_lite.test_csr_service import csr_for, uri

ZTUNNEL = "system:serviceaccount:istio-system:ztunnel"
SEARCH = "spiffe://cluster.local/ns/prod/sa/sa-search"


def bound(user: str, pod_name: str, pod_uid: str, audiences: tuple[str, ...] = ("istio-ca",)) -> dict[str, Any]:
    return {
        "username": user,
        "audiences": list(audiences),
        "extra": {
            "authentication.kubernetes.io/pod-name": [pod_name],
            "authentication.kubernetes.io/pod-uid": [pod_uid],
        },
    }


TOKENS = {
    "tok-a": bound(ZTUNNEL, "ztunnel-a", "uid-a"),
    "tok-b": bound(ZTUNNEL, "ztunnel-b", "uid-b"),
    "tok-app": bound("system:serviceaccount:prod:sa-search", "search-a", "uid-s"),
    "tok-other-audience": bound(ZTUNNEL, "ztunnel-a", "uid-a", audiences=("https://kubernetes.default.svc",)),
    "tok-old-pod": bound(ZTUNNEL, "ztunnel-a", "uid-from-before-restart"),
    "tok-deleted-pod": bound(ZTUNNEL, "ztunnel-gone", "uid-gone"),
    "tok-waypoint": bound("system:serviceaccount:prod:waypoint", "waypoint-7d9f", "uid-w"),
}
WAYPOINT = "spiffe://cluster.local/ns/prod/sa/waypoint"


def ztunnel_pod(name: str, uid: str, node: str) -> dict[str, Any]:
    manifest = pod(name, "istio-system", node, "10.244.0.2")
    manifest["metadata"]["uid"] = uid
    return manifest


@pytest.fixture
async def cluster(spawn: Spawner, tmp_path: Path) -> Any:
    url = emulator_url(spawn, tmp_path, TOKENS)
    admin = connect(url, ADMIN)
    await admin.create(RESOURCES["Pod"], ztunnel_pod("ztunnel-a", "uid-a", "node-a"))
    await admin.create(RESOURCES["Pod"], ztunnel_pod("ztunnel-b", "uid-b", "node-b"))
    await admin.create(RESOURCES["Pod"], pod("search-a", "prod", "node-a", "10.0.0.5"))
    waypoint = pod("waypoint-7d9f", "prod", "node-b", "10.0.0.9")
    waypoint["metadata"]["uid"] = "uid-w"
    waypoint["metadata"].setdefault("labels", {})["gateway.networking.k8s.io/gateway-name"] = "waypoint"
    await admin.create(RESOURCES["Pod"], waypoint)
    api = connect(url, rbac_usage.TOKEN_REVIEW)
    yield api
    await api.aclose()
    await admin.aclose()


async def test_ztunnel_tokens_authenticate_as_the_node_their_pod_runs_on(cluster: KubeApi) -> None:
    authenticator = TokenReviewAuthenticator(cluster)
    caller = await authenticator.authenticate("tok-a")
    assert caller.node == "node-a"
    assert caller.subject == f"{ZTUNNEL}/ztunnel-a"
    assert (await authenticator.authenticate("tok-b")).node == "node-b"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("tok-app", "belongs to system:serviceaccount:prod:sa-search, not " + ZTUNNEL),
        ("tok-other-audience", "rejected by the API server"),
        ("tok-old-pod", "was replaced"),
        ("tok-deleted-pod", "no longer exists"),
        ("not-a-token", "rejected by the API server"),
        ("", "no bearer token"),
    ],
)
async def test_tokens_of_other_accounts_pods_or_audiences_are_refused(
    cluster: KubeApi, token: str, message: str
) -> None:
    with pytest.raises(TokenRefused, match=message):
        await TokenReviewAuthenticator(cluster).authenticate(token)


async def test_a_node_cannot_get_certificates_for_workloads_of_another_node(
    cluster: KubeApi, spawn: Spawner, tmp_path: Path
) -> None:
    """Placement comes from the pods the Kubernetes store sees; search-a runs on node-a only."""
    store_api = connect(f"http://{spawn.components[0].addresses['api']}", rbac_usage.STORE)
    store = KubernetesStore(store_api, kinds=("Pod",))
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        pods = [r.obj for r in store.list().values() if isinstance(r.obj, PodInfo)]
        nursery.cancel_scope.cancel()
    await store_api.aclose()
    placement = StaticPlacement(
        (f"spiffe://cluster.local/ns/{p.namespace}/sa/{p.service_account}", p.node) for p in pods
    )
    service = CsrService(CertificateAuthority.load_or_create(tmp_path / "ca"), placement)
    request = CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=3600)
    authenticator = TokenReviewAuthenticator(cluster)

    on_b = await authenticator.authenticate("tok-b")
    with pytest.raises(NodeNotAuthorized, match="no workload on node 'node-b'"):
        service.sign(request, on_b)
    on_a = await authenticator.authenticate("tok-a")
    assert len(service.sign(request, on_a).cert_chain) == 2


async def test_a_waypoint_pod_gets_its_own_identity_and_no_other(cluster: KubeApi, tmp_path: Path) -> None:
    """A waypoint proves its own ServiceAccount with its projected token; node placement does not apply."""
    service = CsrService(CertificateAuthority.load_or_create(tmp_path / "ca"), StaticPlacement())
    caller = await TokenReviewAuthenticator(cluster).authenticate("tok-waypoint")
    assert (caller.node, caller.workload) == ("node-b", "prod/waypoint")
    own = CsrRequest(csr_pem=csr_for(uri(WAYPOINT)), identity=WAYPOINT, ttl_seconds=3600)
    assert len(service.sign(own, caller).cert_chain) == 2
    other = CsrRequest(csr_pem=csr_for(uri(SEARCH)), identity=SEARCH, ttl_seconds=3600)
    with pytest.raises(NodeNotAuthorized, match="may obtain only its own identity"):
        service.sign(other, caller)
