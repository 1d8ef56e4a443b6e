"""The pushed discovery model: JSON round trip, strict decoding with field paths, resource keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.discovery import (
    RESOURCE_TYPES,
    Action,
    AppProtocol,
    Authorization,
    Clause,
    DiscoveryDecodeError,
    GatewayAddress,
    HealthPolicy,
    LoadBalancing,
    LoadBalancingMode,
    LocalityScope,
    Match,
    NamespacedHostname,
    NetworkAddress,
    Rule,
    Scope,
    Service,
    ServicePort,
    StringMatch,
    TunnelProtocol,
    Workload,
    WorkloadStatus,
    WorkloadType,
    decode,
    from_json,
    resource_key,
    to_json,
    type_name,
)

# ------------------------------------------------------------------------------------ strategies

names = st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True)
text = st.text(max_size=12)
ports = st.integers(min_value=1, max_value=65535)
ipv4 = st.ip_addresses(v=4).map(str)
ips = st.ip_addresses().map(str)
cidrs = st.builds(lambda ip, n: f"{ip}/{n}", ipv4, st.integers(min_value=0, max_value=32))
hostnames = st.builds(lambda a, b: f"{a}.{b}.svc.cluster.local", names, names)
network_addresses = st.builds(NetworkAddress, address=ips, network=st.sampled_from(["", "net-a"]))
gateways = st.one_of(
    st.builds(GatewayAddress, address=network_addresses, hbone_mtls_port=ports),
    st.builds(
        GatewayAddress,
        hostname=st.builds(NamespacedHostname, namespace=names, hostname=hostnames),
        hbone_mtls_port=ports,
    ),
)
port_maps = st.dictionaries(ports, ports, max_size=3)

workloads = st.builds(
    Workload,
    uid=st.builds(lambda ns, n: f"cluster1//v1/Pod/{ns}/{n}", names, names),
    name=names,
    namespace=names,
    addresses=st.lists(ips, max_size=2).map(tuple),
    network=st.sampled_from(["", "net-a"]),
    tunnel_protocol=st.sampled_from(TunnelProtocol),
    trust_domain=st.sampled_from(["cluster.local", "example.org"]),
    service_account=names,
    waypoint=st.none() | gateways,
    node=names,
    canonical_name=text,
    canonical_revision=text,
    workload_name=text,
    workload_type=st.sampled_from(WorkloadType),
    services=st.dictionaries(st.builds(lambda ns, h: f"{ns}/{h}", names, hostnames), port_maps, max_size=2),
    authorization_policies=st.lists(st.builds(lambda ns, n: f"{ns}/{n}", names, names), max_size=2).map(
        tuple
    ),
    status=st.sampled_from(WorkloadStatus),
    capacity=st.integers(min_value=0, max_value=1000),
)

services = st.builds(
    Service,
    name=names,
    namespace=names,
    hostname=hostnames,
    vips=st.lists(network_addresses, max_size=2).map(tuple),
    ports=st.lists(
        st.builds(
            ServicePort,
            service_port=ports,
            target_port=st.integers(0, 65535),
            app_protocol=st.sampled_from(AppProtocol),
        ),
        max_size=3,
    ).map(tuple),
    subject_alt_names=st.lists(text, max_size=2).map(tuple),
    waypoint=st.none() | gateways,
    load_balancing=st.none()
    | st.builds(
        LoadBalancing,
        routing_preference=st.lists(st.sampled_from(LocalityScope), max_size=2).map(tuple),
        mode=st.sampled_from(LoadBalancingMode),
        health_policy=st.sampled_from(HealthPolicy),
    ),
)

string_matches = st.one_of(
    st.builds(StringMatch, exact=text),
    st.builds(StringMatch, prefix=text),
    st.builds(StringMatch, suffix=text),
    st.just(StringMatch(presence=True)),
)
string_match_lists = st.lists(string_matches, max_size=2).map(tuple)
port_lists = st.lists(ports, max_size=2).map(tuple)
cidr_lists = st.lists(cidrs, max_size=2).map(tuple)
matches = st.builds(
    Match,
    namespaces=string_match_lists,
    not_namespaces=string_match_lists,
    principals=string_match_lists,
    not_principals=string_match_lists,
    source_ips=cidr_lists,
    not_source_ips=cidr_lists,
    destination_ips=cidr_lists,
    not_destination_ips=cidr_lists,
    destination_ports=port_lists,
    not_destination_ports=port_lists,
)
authorizations = st.builds(
    Authorization,
    name=names,
    namespace=names,
    scope=st.sampled_from(Scope),
    action=st.sampled_from(Action),
    rules=st.lists(
        st.builds(
            Rule,
            clauses=st.lists(
                st.builds(Clause, matches=st.lists(matches, max_size=2).map(tuple)), max_size=2
            ).map(tuple),
        ),
        max_size=2,
    ).map(tuple),
)


def _over_the_wire(body: dict[str, Any]) -> dict[str, Any]:
    """What the peer really receives: the body after JSON text encoding."""
    wire: dict[str, Any] = json.loads(json.dumps(body))
    return wire


# ---------------------------------------------------------------------------------- round trips


@given(workloads)
def test_workload_round_trips_through_push_json(workload: Workload) -> None:
    body = to_json(workload)
    assert _over_the_wire(body) == body  # to_json output is already plain JSON
    assert from_json(Workload, _over_the_wire(body)) == workload


@given(services)
def test_service_round_trips_through_push_json(service: Service) -> None:
    assert from_json(Service, _over_the_wire(to_json(service))) == service


@given(authorizations)
def test_authorization_round_trips_through_push_json(policy: Authorization) -> None:
    assert from_json(Authorization, _over_the_wire(to_json(policy))) == policy


@given(st.one_of(workloads, services, authorizations))
def test_decode_by_type_name_inverts_to_json(resource: Workload | Service | Authorization) -> None:
    assert decode(type_name(resource), _over_the_wire(to_json(resource))) == resource


# ----------------------------------------------------------------------------------- keys, names


def test_resource_keys_follow_istio_xds_names() -> None:
    workload = Workload(uid="cluster1//v1/Pod/prod/api-1", name="api-1", namespace="prod")
    service = Service(name="api", namespace="prod", hostname="api.prod.svc.cluster.local")
    policy = Authorization(name="deny-all", namespace="prod")
    assert resource_key(workload) == "cluster1//v1/Pod/prod/api-1"
    assert resource_key(service) == "prod/api.prod.svc.cluster.local"
    assert resource_key(policy) == "prod/deny-all"
    assert [type_name(workload), type_name(service), type_name(policy)] == [
        "workload",
        "service",
        "authorization",
    ]
    assert set(RESOURCE_TYPES) == {"workload", "service", "authorization"}


def test_workload_identity_is_spiffe_id_with_istio_defaults() -> None:
    workload = Workload(uid="u", name="p", namespace="prod")
    assert workload.identity == "spiffe://cluster.local/ns/prod/sa/default"
    other = Workload(uid="u", name="p", namespace="prod", trust_domain="example.org", service_account="api")
    assert other.identity == "spiffe://example.org/ns/prod/sa/api"


def test_defaults_are_omitted_from_push_json() -> None:
    body = to_json(Workload(uid="u", name="p", namespace="prod", addresses=("10.0.0.1",)))
    assert body == {"uid": "u", "name": "p", "namespace": "prod", "addresses": ["10.0.0.1"]}


def test_string_match_json_uses_istio_oneof_shape() -> None:
    match = Match(principals=(StringMatch(prefix="cluster.local/ns/prod/"), StringMatch(presence=True)))
    assert to_json(
        Authorization(name="a", namespace="n", rules=(Rule(clauses=(Clause(matches=(match,)),)),))
    ) == {
        "name": "a",
        "namespace": "n",
        "rules": [
            {
                "clauses": [
                    {"matches": [{"principals": [{"prefix": "cluster.local/ns/prod/"}, {"presence": {}}]}]}
                ]
            }
        ],
    }


# ------------------------------------------------------------------------------- strict decoding

BASE = {"uid": "u", "name": "p", "namespace": "prod"}


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        pytest.param(
            Workload,
            {**BASE, "color": "red"},
            "unknown field(s) color @ workload",
            id="unknown-field-is-an-error-not-ignored",
        ),
        pytest.param(
            Workload,
            {"name": "p", "namespace": "prod"},
            "required field missing @ workload.uid",
            id="missing-uid",
        ),
        pytest.param(
            Workload, {**BASE, "addresses": ["10.0.0.300"]}, "'10.0.0.300' is not an IP address", id="bad-ip"
        ),
        pytest.param(
            Workload,
            {**BASE, "addresses": "10.0.0.1"},
            "expected a list, got str '10.0.0.1' @ workload.addresses",
            id="string-is-not-a-list",
        ),
        pytest.param(
            Workload,
            {**BASE, "capacity": "3"},
            "expected int, got str '3' @ workload.capacity",
            id="no-string-to-int-coercion",
        ),
        pytest.param(
            Workload,
            {**BASE, "capacity": True},
            "expected int, got bool True @ workload.capacity",
            id="no-bool-to-int-coercion",
        ),
        pytest.param(
            Workload,
            {**BASE, "tunnel_protocol": "TCP"},
            "'TCP' is not one of HBONE, NONE",
            id="tunnel-protocol-enum",
        ),
        pytest.param(
            Workload,
            {**BASE, "services": {"api.prod": {"80": 8080}}},
            "is not of the form namespace/hostname",
            id="service-key-needs-namespace",
        ),
        pytest.param(
            Workload,
            {**BASE, "services": {"prod/api": {"http": 8080}}},
            "expected integer ports, got 'http': 8080 @ workload.services['prod/api']",
            id="port-map-keys-are-numbers",
        ),
        pytest.param(
            Workload,
            {**BASE, "waypoint": {"hbone_mtls_port": 15008}},
            "exactly one of address or hostname must be set @ workload.waypoint",
            id="waypoint-needs-a-destination",
        ),
        pytest.param(
            Service,
            {
                "name": "a",
                "namespace": "n",
                "hostname": "h",
                "ports": [{"service_port": 0, "target_port": 80}],
            },
            "port 0 is outside 1..65535 @ service.ports[0]",
            id="service-port-range",
        ),
        pytest.param(
            Authorization,
            {"name": "a", "namespace": "n", "action": "AUDIT"},
            "'AUDIT' is not one of ALLOW, DENY @ authorization.action",
            id="audit-action-unsupported",
        ),
        pytest.param(
            Authorization,
            {
                "name": "a",
                "namespace": "n",
                "rules": [{"clauses": [{"matches": [{"principals": [{"regex": ".*"}]}]}]}],
            },
            "@ authorization.rules[0].clauses[0].matches[0].principals[0]",
            id="regex-string-match-unsupported",
        ),
        pytest.param(
            Authorization,
            {
                "name": "a",
                "namespace": "n",
                "rules": [{"clauses": [{"matches": [{"source_ips": ["10.0.0.0/33"]}]}]}],
            },
            "'10.0.0.0/33' is not an IP address or CIDR",
            id="bad-cidr",
        ),
        pytest.param(
            Authorization,
            ["not", "an", "object"],
            "expected an object, got list @ authorization",
            id="body-must-be-an-object",
        ),
    ],
)
def test_bad_push_bodies_are_rejected_with_field_path(kind: type[Any], body: Any, expected: str) -> None:
    with pytest.raises(DiscoveryDecodeError) as caught:
        from_json(kind, body)
    assert expected in caught.value.message


def test_every_problem_in_one_body_is_reported() -> None:
    with pytest.raises(DiscoveryDecodeError) as caught:
        from_json(Workload, {**BASE, "capacity": "x", "node": 5})
    assert "workload.capacity" in caught.value.message
    assert "workload.node" in caught.value.message


def test_decode_names_unknown_type() -> None:
    with pytest.raises(DiscoveryDecodeError, match="unknown resource type 'pod'"):
        decode("pod", {})


def test_bodies_decode_in_process_without_a_json_round_trip() -> None:
    """istiod_lite may hand ``to_json`` output straight to a ProxyState: enums must be plain strings."""
    from schemas import discovery

    workload = discovery.Workload(
        uid="Kubernetes//Pod/prod/a", name="a", namespace="prod", addresses=("127.9.1.0",),
        tunnel_protocol=discovery.TunnelProtocol.NONE,  # not the default, so it is in the body
    )
    body = discovery.to_json(workload)
    assert type(body["tunnel_protocol"]) is str
    assert discovery.from_json(discovery.Workload, body) == workload
