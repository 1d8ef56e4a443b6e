"""ProxyState: transactional pushes, the indices, policy selection and Istio's outbound resolution order."""

from __future__ import annotations

import random

import pytest

from schemas.discovery import (
    Action,
    Authorization,
    GatewayAddress,
    LoadBalancing,
    LoadBalancingMode,
    NamespacedHostname,
    NetworkAddress,
    Scope,
    Service,
    ServicePort,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    resource_key,
    to_json,
)
from ztunnel.lb import NoHealthyEndpoints, UnknownServicePort
from ztunnel.state import Destination, DestinationKind, ProxyState, RejectedUpdate, UnknownWaypoint

FQDN = "{}.{}.svc.cluster.local"


def svc(name: str, ns: str, vip: str | None, *, port: int = 80, target: int = 8080, **extra: object) -> Service:
    return Service(
        name=name, namespace=ns, hostname=FQDN.format(name, ns),
        vips=(NetworkAddress(address=vip),) if vip else (), ports=(ServicePort(service_port=port, target_port=target),),
        **extra,  # type: ignore[arg-type]
    )


def pod(name: str, ns: str, ip: str, *, node: str = "node-a", services: dict[str, dict[int, int]] | None = None,
        **extra: object) -> Workload:
    return Workload(
        uid=f"cluster1//v1/Pod/{ns}/{name}", name=name, namespace=ns, addresses=(ip,), node=node,
        service_account=name.rsplit("-", 1)[0], services=services or {},
        **extra,  # type: ignore[arg-type]
    )


WAYPOINT_BY_NAME = GatewayAddress(
    hostname=NamespacedHostname(namespace="prod", hostname=FQDN.format("waypoint", "prod")))
API = svc("api", "prod", "240.240.0.10", subject_alt_names=("spiffe://cluster.local/ns/prod/sa/api-canonical",))
REVIEWS = svc("reviews", "prod", "240.240.0.11", port=9080, target=9080, waypoint=WAYPOINT_BY_NAME)
WAYPOINT = svc("waypoint", "prod", "240.240.0.20", port=15021, target=15021)
LEGACY = svc("legacy", "prod", "240.240.0.12", port=5432, target=5432)
OPEN = svc("open", "prod", "240.240.0.13", load_balancing=LoadBalancing(mode=LoadBalancingMode.PASSTHROUGH))
DEV_API = svc("api", "dev", "240.240.1.10")

CLIENT = pod("client-1", "prod", "10.0.0.5")
API_1 = pod("api-1", "prod", "10.0.0.11", services={resource_key(API): {80: 8080}})
REVIEWS_1 = pod("reviews-1", "prod", "10.0.0.21", node="node-b", services={resource_key(REVIEWS): {9080: 9080}})
WAYPOINT_1 = pod("waypoint-1", "prod", "10.0.0.30", services={resource_key(WAYPOINT): {15021: 15021}})
DB_1 = pod("db-1", "prod", "10.0.0.40", waypoint=GatewayAddress(address=NetworkAddress(address="240.240.0.20")))
LEGACY_1 = pod("legacy-1", "prod", "10.0.0.50", tunnel_protocol=TunnelProtocol.NONE,
               services={resource_key(LEGACY): {5432: 5432}})
DEV_API_1 = pod("api-1", "dev", "10.0.1.11", node="node-b", services={resource_key(DEV_API): {80: 8081}})
DEV_CLIENT = pod("tool-1", "dev", "10.0.1.5")
V6_POD = pod("v6-1", "prod", "fd00::7")


def mesh() -> ProxyState:
    state = ProxyState(rng=random.Random(5))
    state.apply("service", [API, REVIEWS, WAYPOINT, LEGACY, OPEN, DEV_API])
    state.apply("workload", [CLIENT, API_1, REVIEWS_1, WAYPOINT_1, DB_1, LEGACY_1, DEV_API_1, DEV_CLIENT, V6_POD])
    return state


def hbone(workload: Workload, authority: str, service: Service | None = None,
          kind: DestinationKind = DestinationKind.DIRECT, sans: tuple[str, ...] = ()) -> Destination:
    return Destination(
        kind=kind, address=workload.addresses[0], port=15008, tunnel=TunnelProtocol.HBONE, authority=authority,
        workload=workload, service=service, expected_identities=(workload.identity, *sans),
    )


# ------------------------------------------------------------------------------ outbound routing

ROUTES = [
    pytest.param("240.240.0.10", 80, CLIENT,
                 hbone(API_1, "10.0.0.11:8080", API, sans=API.subject_alt_names),
                 id="service-vip-goes-to-an-endpoint-over-hbone-with-podip-targetport-authority"),
    pytest.param(FQDN.format("api", "prod"), 80, CLIENT,
                 hbone(API_1, "10.0.0.11:8080", API, sans=API.subject_alt_names), id="service-fqdn"),
    pytest.param("api", 80, CLIENT,
                 hbone(API_1, "10.0.0.11:8080", API, sans=API.subject_alt_names),
                 id="short-name-resolves-in-the-source-namespace"),
    pytest.param("api", 80, DEV_CLIENT, hbone(DEV_API_1, "10.0.1.11:8081", DEV_API),
                 id="same-short-name-from-another-namespace-is-that-namespace's-service"),
    pytest.param("api.prod", 80, DEV_CLIENT,
                 hbone(API_1, "10.0.0.11:8080", API, sans=API.subject_alt_names), id="svc.ns-form"),
    pytest.param("api.prod.svc", 80, DEV_CLIENT,
                 hbone(API_1, "10.0.0.11:8080", API, sans=API.subject_alt_names), id="svc.ns.svc-form"),
    pytest.param("240.240.0.11", 9080, CLIENT,
                 hbone(WAYPOINT_1, "240.240.0.11:9080", REVIEWS, kind=DestinationKind.WAYPOINT),
                 id="service-with-waypoint-goes-to-waypoint-with-original-vip-authority"),
    pytest.param(FQDN.format("reviews", "prod"), 9080, CLIENT,
                 hbone(WAYPOINT_1, "240.240.0.11:9080", REVIEWS, kind=DestinationKind.WAYPOINT),
                 id="hostname-addressed-service-with-waypoint-uses-its-vip-as-authority"),
    pytest.param("240.240.0.11", 9080, WAYPOINT_1, hbone(REVIEWS_1, "10.0.0.21:9080", REVIEWS),
                 id="waypoint-itself-is-not-sent-back-to-the-waypoint"),
    pytest.param("10.0.0.11", 8080, CLIENT, hbone(API_1, "10.0.0.11:8080"),
                 id="workload-ip-goes-direct-on-the-addressed-port"),
    pytest.param("10.0.0.40", 27017, CLIENT,
                 hbone(WAYPOINT_1, "10.0.0.40:27017", kind=DestinationKind.WAYPOINT),
                 id="workload-with-waypoint-by-vip-goes-through-it"),
    pytest.param("fd00::7", 443, CLIENT, hbone(V6_POD, "[fd00::7]:443"), id="ipv6-authority-is-bracketed"),
    pytest.param("240.240.0.12", 5432, CLIENT,
                 Destination(kind=DestinationKind.DIRECT, address="10.0.0.50", port=5432, workload=LEGACY_1,
                             service=LEGACY),
                 id="endpoint-without-hbone-gets-plain-tcp-to-its-target-port"),
    pytest.param("240.240.0.13", 80, CLIENT,
                 Destination(kind=DestinationKind.PASSTHROUGH, address="240.240.0.13", port=80, service=OPEN),
                 id="passthrough-load-balancing-dials-the-original-address"),
    pytest.param("192.0.2.1", 443, CLIENT,
                 Destination(kind=DestinationKind.PASSTHROUGH, address="192.0.2.1", port=443),
                 id="unknown-address-is-passed-through"),
    pytest.param("example.org", 443, CLIENT,
                 Destination(kind=DestinationKind.PASSTHROUGH, address="example.org", port=443),
                 id="unknown-hostname-is-passed-through"),
    pytest.param("api", 80, None,
                 Destination(kind=DestinationKind.PASSTHROUGH, address="api", port=80),
                 id="short-name-needs-a-source-namespace"),
    pytest.param("240.240.0.10", 80, pod("remote-1", "prod", "10.9.0.1", network="net-b"),
                 Destination(kind=DestinationKind.PASSTHROUGH, address="240.240.0.10", port=80),
                 id="vips-are-per-network"),
]


@pytest.mark.parametrize(("address", "port", "source", "expected"), ROUTES)
def test_find_destination_follows_istio_order(
    address: str, port: int, source: Workload | None, expected: Destination
) -> None:
    assert mesh().find_destination(address, port, source) == expected


def test_service_lookup_spreads_over_endpoints() -> None:
    state = mesh()
    api_2 = pod("api-2", "prod", "10.0.0.12", node="node-b", services={resource_key(API): {80: 8080}})
    state.apply("workload", [api_2])
    seen = {state.find_destination("240.240.0.10", 80, CLIENT).address for _ in range(100)}
    assert seen == {"10.0.0.11", "10.0.0.12"}


def test_service_without_that_port_is_an_error() -> None:
    with pytest.raises(UnknownServicePort):
        mesh().find_destination("240.240.0.10", 81, CLIENT)


def test_service_without_endpoints_is_an_error() -> None:
    state = mesh()
    state.apply("workload", [], removed_keys=[API_1.uid])
    with pytest.raises(NoHealthyEndpoints):
        state.find_destination("api", 80, CLIENT)


def test_unknown_waypoint_is_an_error_with_a_hint() -> None:
    state = mesh()
    state.apply("service", [], removed_keys=[resource_key(WAYPOINT)])
    with pytest.raises(UnknownWaypoint) as caught:
        state.find_destination("240.240.0.11", 9080, CLIENT)
    assert "prod/waypoint.prod.svc.cluster.local" in str(caught.value)


# ------------------------------------------------------------------------------------- indices


def test_lookups_by_ip_uid_vip_and_hostname() -> None:
    state = mesh()
    assert state.workload_by_ip("10.0.0.11") is API_1
    assert state.workload_by_ip("fd00:0::7") is V6_POD  # any spelling of the address
    assert state.workload_by_ip("10.0.0.11", network="net-b") is None
    assert state.workload(API_1.uid) is API_1
    assert state.service_by_vip("240.240.0.10") is API
    assert state.service_by_hostname(FQDN.format("api", "prod")) is API
    assert state.service_by_hostname("API.prod.svc.cluster.local.") is API  # case and absolute form
    assert state.service(resource_key(API)) is API
    assert state.endpoints(API) == (API_1,)


def test_host_addresses_answer_dns_with_vips_or_headless_endpoints() -> None:
    state = mesh()
    headless = svc("cache", "prod", None)
    cache_pods = [
        pod("cache-1", "prod", "10.0.0.61", services={resource_key(headless): {80: 8080}}),
        pod("cache-2", "prod", "10.0.0.62", services={resource_key(headless): {80: 8080}},
            status=WorkloadStatus.UNHEALTHY),
    ]
    state.apply("service", [headless])
    state.apply("workload", cache_pods)
    assert state.host_addresses("api.prod.svc.cluster.local") == ("240.240.0.10",)
    assert state.host_addresses("API.prod.svc.cluster.local.") == ("240.240.0.10",)
    assert state.host_addresses("cache.prod.svc.cluster.local") == ("10.0.0.61",)
    assert state.host_addresses("api.prod.svc.cluster.local", network="net-b") == ()
    assert state.host_addresses("nothing.prod.svc.cluster.local") == ()


def test_local_workloads_are_those_on_the_node() -> None:
    assert {w.name for w in mesh().local_workloads("node-b")} == {"reviews-1", "api-1"}
    assert {w.namespace for w in mesh().local_workloads("node-b")} == {"prod", "dev"}


def _policy(name: str, ns: str, scope: Scope) -> Authorization:
    return Authorization(name=name, namespace=ns, scope=scope, action=Action.DENY)


def test_policies_for_a_workload_are_global_namespace_and_selected() -> None:
    state = mesh()
    state.apply("authorization", [
        _policy("mesh-wide", "istio-system", Scope.GLOBAL),
        _policy("ns-wide", "prod", Scope.NAMESPACE),
        _policy("other-ns", "dev", Scope.NAMESPACE),
        _policy("api-only", "prod", Scope.WORKLOAD_SELECTOR),
        _policy("reviews-only", "prod", Scope.WORKLOAD_SELECTOR),
    ])
    selected = pod("api-9", "prod", "10.0.0.99", authorization_policies=("prod/api-only", "prod/ns-wide", "prod/gone"))
    assert [resource_key(p) for p in state.policies_for(selected)] == [
        "istio-system/mesh-wide", "prod/ns-wide", "prod/api-only"]
    assert [resource_key(p) for p in state.policies_for(DEV_CLIENT)] == ["istio-system/mesh-wide", "dev/other-ns"]


# ------------------------------------------------------------------------------ transactional apply


def test_apply_accepts_push_json_and_reports_removals() -> None:
    state = ProxyState()
    result = state.apply("workload", [to_json(API_1), CLIENT])
    assert result.upserted == (API_1.uid, CLIENT.uid)
    assert state.workload(API_1.uid) == API_1
    result = state.apply("workload", [], removed_keys=[CLIENT.uid, "cluster1//v1/Pod/prod/never-seen"])
    assert result.removed == (CLIENT.uid,)
    assert result.unknown_removals == ("cluster1//v1/Pod/prod/never-seen",)
    assert state.workload(CLIENT.uid) is None
    assert state.synced_types == {"workload"}


def test_upsert_replaces_and_reindexes() -> None:
    state = mesh()
    moved = pod("api-1", "prod", "10.0.0.111", services={resource_key(API): {80: 8080}})
    state.apply("workload", [moved])
    assert state.workload_by_ip("10.0.0.11") is None
    assert state.workload_by_ip("10.0.0.111") is moved


def test_replace_drops_everything_not_in_the_full_state() -> None:
    state = mesh()
    state.apply("workload", [CLIENT], replace=True)
    assert state.workloads() == [CLIENT]
    assert state.services() != []  # other types are untouched


BAD_PUSHES = [
    pytest.param("workload", [to_json(API_1), {**to_json(CLIENT), "addresses": ["not-an-ip"]}], [],
                 "resources[1]: addresses: 'not-an-ip' is not an IP address", id="one-bad-body-rejects-the-whole-push"),
    pytest.param("workload", [pod("imposter-1", "prod", "10.0.0.11")], [],
                 "both claim address 10.0.0.11", id="two-workloads-on-one-ip"),
    pytest.param("service", [svc("copy", "prod", "240.240.0.10")], [], "both claim VIP 240.240.0.10",
                 id="two-services-on-one-vip"),
    pytest.param("workload", [CLIENT, CLIENT], [], f"workload {CLIENT.uid} appears twice", id="duplicate-key"),
    pytest.param("workload", [CLIENT], [CLIENT.uid], "is both updated and removed", id="update-and-remove"),
    pytest.param("workload", [API], [], "expected a workload, got Service", id="wrong-type-object"),
    pytest.param("pod", [], [], "unknown resource type 'pod'", id="unknown-type"),
]


@pytest.mark.parametrize(("type_name", "upserts", "removed", "message"), BAD_PUSHES)
def test_rejected_push_changes_nothing(type_name: str, upserts: list[object], removed: list[str], message: str) -> None:
    state = mesh()
    before, generation = state.snapshot(), state.generation
    with pytest.raises(RejectedUpdate) as caught:
        state.apply(type_name, upserts, removed)  # type: ignore[arg-type]
    assert message in caught.value.message
    assert "previous configuration stays in force" in str(caught.value)
    assert state.snapshot() == before
    assert state.generation == generation


def test_replace_all_is_one_transaction() -> None:
    state = mesh()
    before = state.snapshot()
    with pytest.raises(RejectedUpdate, match="both claim address"):
        state.replace_all(workloads=[CLIENT, pod("twin-1", "prod", "10.0.0.5")], services=[], policies=[])
    assert state.snapshot() == before
    state.replace_all(workloads=[CLIENT], services=[API], policies=[])
    assert (state.workloads(), state.services(), state.policies()) == ([CLIENT], [API], [])
    assert state.synced_types == {"workload", "service", "authorization"}


def test_snapshot_is_push_json_sorted_by_key() -> None:
    snapshot = mesh().snapshot()
    assert snapshot["generation"] == 2
    assert snapshot["synced"] == ["service", "workload"]
    assert snapshot["services"][0] == to_json(DEV_API)
    assert [w["uid"] for w in snapshot["workloads"]] == sorted(w["uid"] for w in snapshot["workloads"])
    assert snapshot["policies"] == []
