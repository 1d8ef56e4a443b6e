"""ztunnel's LOCAL_XDS_PATH file shape loads into discovery objects; mistakes are named by file and path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from schemas.discovery import (
    Action,
    Authorization,
    Clause,
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
)
from ztunnel.authz import ConnectionInfo, evaluate
from ztunnel.local_config import LocalConfigError, load_local_config, parse_local_config
from ztunnel.state import DestinationKind, ProxyState

# The shape of ztunnel's examples/localhost.yaml: serde camelCase, ports as maps, VIPs as network/IP,
# policies as rules → clauses → matches nested lists, enum names as ztunnel serialises them.
ZTUNNEL_STYLE = """
workloads:
- uid: cluster1//v1/Pod/default/local
  name: local
  namespace: default
  serviceAccount: default
  workloadIps: ["127.0.0.1"]
  protocol: HBONE
  node: local
  network: ""
  services:
    "default/example.com":
      80: 8080
- uid: cluster1//v1/Pod/default/local-tcp
  name: local-tcp
  namespace: default
  workloadIps: ["127.0.0.2"]
  protocol: TCP
  node: local
  services:
    "default/example.com":
      80: 8080
policies:
- name: deny-9999
  namespace: default
  scope: Namespace
  action: Allow
  dryRun: false
  rules:
  - - - notDestinationPorts: [9999]
services:
- name: local
  namespace: default
  hostname: example.com
  vips: ["/127.10.0.1"]
  ports:
    80: 8080
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/local"]
  canonical: true
"""


def test_ztunnel_style_file_loads_unchanged() -> None:
    config = parse_local_config(ZTUNNEL_STYLE, source="localhost.yaml")
    local, local_tcp = config.workloads
    assert local == Workload(
        uid="cluster1//v1/Pod/default/local", name="local", namespace="default", service_account="default",
        addresses=("127.0.0.1",), tunnel_protocol=TunnelProtocol.HBONE, node="local",
        services={"default/example.com": {80: 8080}},
    )
    assert local_tcp.tunnel_protocol is TunnelProtocol.NONE  # ztunnel's "TCP": not in the mesh
    assert config.services == (Service(
        name="local", namespace="default", hostname="example.com", vips=(NetworkAddress(address="127.10.0.1"),),
        ports=(ServicePort(service_port=80, target_port=8080),),
        subject_alt_names=("spiffe://cluster.local/ns/default/sa/local",),
    ),)
    assert config.policies == (Authorization(
        name="deny-9999", namespace="default", scope=Scope.NAMESPACE, action=Action.ALLOW,
        rules=(Rule(clauses=(Clause(matches=(Match(not_destination_ports=(9999,)),)),)),),
    ),)
    assert config.warnings == ()


def test_loaded_config_drives_state_routing_and_authorization() -> None:
    config = parse_local_config(ZTUNNEL_STYLE)
    state = ProxyState(rng=random.Random(1))
    state.replace_all(workloads=config.workloads, services=config.services, policies=config.policies)
    local = state.workload_by_ip("127.0.0.1")
    assert local is not None
    routed = state.find_destination("127.10.0.1", 80, local)
    assert routed.kind is DestinationKind.DIRECT
    assert routed.service is not None and routed.service.hostname == "example.com"
    policies = state.policies_for(local)
    to_9999 = ConnectionInfo(source_ip="127.0.0.2", destination_ip="127.0.0.1", destination_port=9999)
    to_8080 = ConnectionInfo(source_ip="127.0.0.2", destination_ip="127.0.0.1", destination_port=8080)
    assert not evaluate(to_9999, policies).allowed
    assert evaluate(to_8080, policies).allowed


def test_every_optional_shape_is_understood() -> None:
    config = parse_local_config("""
workloads:
- name: api-1
  namespace: prod
  workloadIps: ["10.0.0.11", "fd00::11"]
  protocol: HBONE
  trustDomain: example.org
  serviceAccount: api
  canonicalName: api
  canonicalRevision: v2
  workloadName: api
  workloadType: deployment
  status: Unhealthy
  capacity: 3
  authorizationPolicies: [prod/api-only]
  waypoint: {destination: "prod/waypoint.prod.svc.cluster.local", hboneMtlsPort: 15008}
  clusterId: cluster1
services:
- name: db
  namespace: prod
  hostname: db.prod.svc.cluster.local
  vips: ["net-a/240.240.0.9"]
  ports: {5432: 5432}
  waypoint: {destination: "/240.240.0.20"}
  loadBalancer: {routingPreferences: [Node], mode: Failover, healthPolicy: AllowAll}
policies:
- name: api-only
  namespace: prod
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - namespaces: [{Exact: dev}]
        notPrincipals: [{Prefix: "cluster.local/ns/prod/"}, {Suffix: "/sa/admin"}, {Presence: []}]
        sourceIps: ["10.0.0.0/8"]
        notDestinationIps: ["10.0.0.99"]
    - []
""")
    (workload,) = config.workloads
    assert workload.uid == "Kubernetes//Pod/prod/api-1"  # derived like istiod's pod uids when omitted
    assert workload.identity == "spiffe://example.org/ns/prod/sa/api"
    assert (workload.workload_type, workload.status, workload.capacity) == (
        WorkloadType.DEPLOYMENT, WorkloadStatus.UNHEALTHY, 3)
    assert workload.waypoint == GatewayAddress(
        hostname=NamespacedHostname(namespace="prod", hostname="waypoint.prod.svc.cluster.local"))
    (service,) = config.services
    assert service.vips == (NetworkAddress(network="net-a", address="240.240.0.9"),)
    assert service.waypoint == GatewayAddress(address=NetworkAddress(address="240.240.0.20"))
    assert service.load_balancing == LoadBalancing(
        routing_preference=(LocalityScope.NODE,), mode=LoadBalancingMode.FAILOVER,
        health_policy=HealthPolicy.ALLOW_ALL)
    (policy,) = config.policies
    (rule,) = policy.rules
    first, empty = rule.clauses
    assert empty == Clause()
    assert first.matches[0].not_principals == (
        StringMatch(prefix="cluster.local/ns/prod/"), StringMatch(suffix="/sa/admin"), StringMatch(presence=True))
    assert first.matches[0].namespaces == (StringMatch(exact="dev"),)


def test_dry_run_policies_are_not_enforced_and_say_so() -> None:
    config = parse_local_config("""
policies:
- {name: audit-me, namespace: prod, scope: Namespace, action: Deny, dryRun: true, rules: [[]]}
""", source="cfg.yaml")
    assert config.policies == ()
    assert config.warnings == ("cfg.yaml: policies[0]: dry-run policy prod/audit-me is not enforced",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("workloads: [{name: a, namespace: p, workloadIps: ['10.0.0.300']}]",
                     "workloads[0].workloadIps[0]: '10.0.0.300' is not an IP address", id="bad-ip"),
        pytest.param("workloads: [{name: a, namespace: p, protocol: DOUBLEHBONE}]",
                     "workloads[0].protocol: expected HBONE or TCP, got 'DOUBLEHBONE'", id="unsupported-protocol"),
        pytest.param("workloads: [{name: a, namespace: p, servics: {}}]",
                     "workloads[0].servics: unknown field (did you mean 'services'?)", id="typo-gets-did-you-mean"),
        pytest.param("workloads: [{name: a, namespace: p, networkGateway: {destination: '/1.2.3.4'}}]",
                     "workloads[0].networkGateway: ztunnel field not supported by this mesh",
                     id="unmodelled-ztunnel-field-is-refused"),
        pytest.param("policies: [{name: x, namespace: p, rules: [[[{serviceAccounts: []}]]]}]",
                     "policies[0].rules[0][0][0].serviceAccounts: ztunnel field not supported",
                     id="service-account-match-refused"),
        pytest.param("workloads: [{name: a, namespace: p, colour: red}]",
                     "workloads[0].colour: unknown field (not supported by this mesh)", id="unknown-field"),
        pytest.param("workloads: [{namespace: p}]", "workloads[0].name: required field missing", id="missing-name"),
        pytest.param("workloads: [{name: a, namespace: p, capacity: '2'}]",
                     "workloads[0].capacity: expected an integer, got str '2'", id="capacity-is-a-number"),
        pytest.param("workloads: [{name: a, namespace: p, capacity: -1}]",
                     "workloads[0]: 'capacity' must be >= 0: -1", id="validator-error-at-object-path"),
        pytest.param("workloads: [{name: a, namespace: p, services: {'api.prod': {80: 8080}}}]",
                     "workloads[0].services: key 'api.prod' is not of the form namespace/hostname",
                     id="service-key-needs-namespace"),
        pytest.param("workloads: [{name: a, namespace: p, services: {'p/api': {80: http}}}]",
                     "workloads[0].services['p/api'][80]: expected a port number 1..65535, got 'http'",
                     id="target-port-is-a-number"),
        pytest.param("workloads: [{name: a, namespace: p, waypoint: {destination: wp}}]",
                     "workloads[0].waypoint.destination: expected network/IP or namespace/hostname, got 'wp'",
                     id="waypoint-destination-shape"),
        pytest.param("services: [{name: s, namespace: p, hostname: h, vips: ['240.240.0.1']}]",
                     "services[0].vips[0]: expected network/IP (use a leading '/' for the default network)",
                     id="vip-needs-network-prefix"),
        pytest.param("services: [{name: s, namespace: p, hostname: h, loadBalancer: {mode: Sticky}}]",
                     "services[0].loadBalancer.mode: expected one of Standard, Strict, Failover, Passthrough",
                     id="lb-mode-enum"),
        pytest.param("policies: [{name: x, namespace: p, action: Audit}]",
                     "policies[0].action: expected one of Allow, Deny, got 'Audit'", id="audit-unsupported"),
        pytest.param("policies: [{name: x, namespace: p, scope: Cluster}]",
                     "policies[0].scope: expected one of Global, Namespace, WorkloadSelector", id="scope-enum"),
        pytest.param("policies: [{name: x, namespace: p, rules: [[[{principals: [{Regex: '.*'}]}]]]}]",
                     "policies[0].rules[0][0][0].principals[0]: unknown string match 'regex'", id="no-regex"),
        pytest.param("policies: [{name: x, namespace: p, rules: [[[{sourceIps: ['10.0.0.0/40']}]]]}]",
                     "policies[0].rules[0][0][0].sourceIps[0]: '10.0.0.0/40' is not an IP address or CIDR",
                     id="bad-cidr"),
        pytest.param("policies: [{name: x, namespace: p, rules: [{from: []}]}]",
                     "policies[0].rules[0]: expected a list of clauses", id="istio-crd-shape-is-not-this-shape"),
        pytest.param("workloads: [{name: a, namespace: p}, {name: a, namespace: p}]",
                     "workloads[1]: Kubernetes//Pod/p/a is already defined at workloads[0]", id="duplicate-uid"),
        pytest.param("- name: a\n  workloadIp: 127.0.0.1\n",
                     "expected a mapping with workloads, services and policies, got list", id="old-list-format"),
        pytest.param("workloads: [", "not valid YAML", id="yaml-syntax"),
        pytest.param("pods: []", "pods: unknown field", id="unknown-top-level"),
    ],
)
def test_mistakes_name_file_and_field(text: str, expected: str) -> None:
    with pytest.raises(LocalConfigError) as caught:
        parse_local_config(text, source="mesh.yaml")
    assert str(caught.value).startswith("mesh.yaml: ")
    assert expected in str(caught.value)


def test_all_problems_are_reported_in_one_run() -> None:
    with pytest.raises(LocalConfigError) as caught:
        parse_local_config("""
workloads:
- {name: a, namespace: p, workloadIps: [bad], capacity: x}
services:
- {name: s, namespace: p}
""", source="mesh.yaml")
    message = caught.value.message
    assert "3 problem(s)" in message
    for fragment in ("workloads[0].workloadIps[0]", "workloads[0].capacity", "services[0].hostname"):
        assert fragment in message


def test_load_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ztunnel.yaml"
    path.write_text(ZTUNNEL_STYLE, encoding="utf-8")
    assert len(load_local_config(path).workloads) == 2
    with pytest.raises(LocalConfigError, match=r"missing\.yaml: cannot read"):
        load_local_config(tmp_path / "missing.yaml")


def test_empty_file_is_an_empty_mesh() -> None:
    assert parse_local_config("") == parse_local_config("workloads: []\nservices: []\npolicies: []\n")
