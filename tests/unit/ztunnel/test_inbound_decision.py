"""Inbound verdicts as a table: the listener's own workload only, then Istio's DENY-then-ALLOW order."""

from __future__ import annotations

import ipaddress

import attrs
import pytest

from meshcore.hbone.connect import ConnectRequest, ConnectStatus
from schemas.discovery import Action, Authorization, Clause, Match, Rule, Scope, StringMatch, Workload
from ztunnel.inbound_decision import baggage_for, decide_inbound, peer_ip, source_ip

CLIENT_POD = Workload(uid="cli", name="client-0", namespace="prod", addresses=("10.0.0.1",), service_account="client")
OTHER_POD = Workload(uid="oth", name="other-0", namespace="prod", addresses=("10.0.0.9",), service_account="other")
SERVER = Workload(uid="srv", name="server-0", namespace="prod", addresses=("10.0.0.2",), service_account="server",
                  workload_name="server", canonical_name="server", canonical_revision="v2")
CLIENT_ID = "spiffe://cluster.local/ns/prod/sa/client"


def request(port: int = 8080, identity: str = CLIENT_ID, forwarded: str | None = "10.0.0.1") -> ConnectRequest:
    return ConnectRequest(
        authority=f"10.0.0.2:{port}",
        target_ip=ipaddress.IPv4Address("10.0.0.2"),
        target_port=port,
        forwarded_for=(ipaddress.IPv4Address(forwarded), 40000) if forwarded else None,
        peer_identity=identity,
        peer_address="127.0.0.1:51000",
    )


def policy(action: Action, match: Match, name: str = "p") -> Authorization:
    return Authorization(name=name, namespace="prod", scope=Scope.NAMESPACE, action=action,
                         rules=(Rule(clauses=(Clause(matches=(match,)),)),))


DENY_9090 = policy(Action.DENY, Match(destination_ports=(9090,)), "deny-9090")
ALLOW_CLIENT = policy(Action.ALLOW, Match(principals=(StringMatch(exact="cluster.local/ns/prod/sa/client"),)),
                      "allow-client")
ALLOW_NS = policy(Action.ALLOW, Match(namespaces=(StringMatch(exact="prod"),)), "allow-prod")
ALLOW_FROM_IP = policy(Action.ALLOW, Match(source_ips=("10.0.0.1/32",)), "allow-ip")


OWNERS = {"10.0.0.1": CLIENT_POD, "10.0.0.9": OTHER_POD}


@pytest.mark.parametrize(
    ("req", "policies", "status", "flags"),
    [
        (request(), [], ConnectStatus.OK, "-"),
        (request(9090), [DENY_9090], ConnectStatus.UNAUTHORIZED, "DENY"),
        (request(8080), [DENY_9090], ConnectStatus.OK, "-"),
        (request(), [ALLOW_CLIENT], ConnectStatus.OK, "-"),
        (request(identity="spiffe://cluster.local/ns/prod/sa/other"), [ALLOW_CLIENT], ConnectStatus.UNAUTHORIZED,
         "DENY"),
        (request(identity="spiffe://cluster.local/ns/dev/sa/client"), [ALLOW_NS], ConnectStatus.UNAUTHORIZED, "DENY"),
        (request(identity="spiffe://cluster.local/ns/prod/sa/any"), [ALLOW_NS], ConnectStatus.OK, "-"),
        (request(9090), [ALLOW_CLIENT, DENY_9090], ConnectStatus.UNAUTHORIZED, "DENY"),
        (request(forwarded="10.0.0.1"), [ALLOW_FROM_IP], ConnectStatus.OK, "-"),
        (request(forwarded="10.0.0.9"), [ALLOW_FROM_IP], ConnectStatus.UNAUTHORIZED, "DENY"),
        # A client claiming another workload's address inside an allowed range is judged by its TCP peer.
        (request(forwarded="10.0.0.1", identity="spiffe://cluster.local/ns/prod/sa/other"), [ALLOW_FROM_IP],
         ConnectStatus.UNAUTHORIZED, "DENY"),
        (request(forwarded="10.0.0.5"), [ALLOW_FROM_IP], ConnectStatus.UNAUTHORIZED, "DENY"),  # no owner: peer
        (request(forwarded=None), [ALLOW_FROM_IP], ConnectStatus.UNAUTHORIZED, "DENY"),  # peer 127.0.0.1
    ],
)
def test_verdicts(req: ConnectRequest, policies: list[Authorization], status: ConnectStatus, flags: str) -> None:
    claimed = str(req.forwarded_for[0]) if req.forwarded_for else ""
    verdict = decide_inbound(req, target=SERVER, listener_uid="srv", policies=policies,
                             forwarded_owner=OWNERS.get(claimed))
    assert (verdict.status, verdict.response_flags) == (status, flags)
    assert verdict.connection is not None and verdict.connection.source_identity == req.peer_identity


def test_deny_names_the_policy() -> None:
    verdict = decide_inbound(request(9090), target=SERVER, listener_uid="srv", policies=[DENY_9090])
    assert verdict.reason == "deny: a DENY policy matched (prod/deny-9090)"


@pytest.mark.parametrize(
    ("target", "listener"),
    [(None, "srv"), (SERVER, "another-pod"), (attrs.evolve(SERVER, uid="moved"), "srv")],
)
def test_an_address_this_listener_does_not_serve_is_a_bad_request(target: Workload | None, listener: str) -> None:
    verdict = decide_inbound(request(), target=target, listener_uid=listener, policies=[])
    assert verdict.status is ConnectStatus.BAD_REQUEST and not verdict.allowed


@pytest.mark.parametrize(
    ("text", "ip"),
    [("10.1.2.3:80", "10.1.2.3"), ("[fd00::1]:443", "fd00::1"), ("unknown", None), ("", None)],
)
def test_peer_ip(text: str, ip: str | None) -> None:
    assert peer_ip(text) == ip


def test_source_ip_trusts_forwarded_only_from_its_owner() -> None:
    assert source_ip(request(forwarded="10.0.0.1"), CLIENT_POD) == "10.0.0.1"
    assert source_ip(request(forwarded="10.0.0.9"), OTHER_POD) == "127.0.0.1"  # identity mismatch
    assert source_ip(request(forwarded="10.0.0.5"), None) == "127.0.0.1"  # nobody owns it
    assert source_ip(request(forwarded=None), None) == "127.0.0.1"


def test_baggage_names_the_workload() -> None:
    assert baggage_for(SERVER) == (
        "k8s.namespace.name=prod,k8s.pod.name=server-0,service.name=server,service.version=v2,"
        "k8s.deployment.name=server"
    )
