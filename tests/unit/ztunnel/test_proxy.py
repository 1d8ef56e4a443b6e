"""Which listeners a node's state calls for (the pure part of the Ztunnel shell)."""

from __future__ import annotations

from schemas.discovery import TunnelProtocol, Workload
from ztunnel.proxy import ListenerKey, desired_listeners

WEB = Workload(uid="web", name="web", namespace="prod", addresses=("127.9.2.1", "127.9.2.9"), node="n",
               service_account="web")
LEGACY = Workload(uid="legacy", name="legacy", namespace="prod", addresses=("127.9.2.2",), node="n",
                  tunnel_protocol=TunnelProtocol.NONE)
PENDING = Workload(uid="pending", name="pending", namespace="prod", node="n")


def test_hbone_workloads_with_an_address_get_listeners_on_their_first_ip() -> None:
    assert desired_listeners([WEB, LEGACY, PENDING]) == {
        "web": ListenerKey(uid="web", address="127.9.2.1", identity="spiffe://cluster.local/ns/prod/sa/web"),
    }


def test_a_changed_identity_or_address_is_a_different_key() -> None:
    moved = Workload(uid="web", name="web", namespace="prod", addresses=("127.9.2.5",), node="n",
                     service_account="web")
    renamed = Workload(uid="web", name="web", namespace="prod", addresses=("127.9.2.1",), node="n",
                       service_account="web-v2")
    before = desired_listeners([WEB])["web"]
    assert desired_listeners([moved])["web"] != before
    assert desired_listeners([renamed])["web"] != before
