"""Node authorization's view: identities and nodes from translated workload bodies, schema defaults."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.placement import TranslatedPlacement

SEARCH = {"uid": "u1", "name": "search-0", "namespace": "prod", "service_account": "search", "node": "node-0"}


@pytest.mark.parametrize(
    ("workloads", "identity", "node", "allowed"),
    [
        ({"u1": SEARCH}, "spiffe://cluster.local/ns/prod/sa/search", "node-0", True),
        ({"u1": SEARCH}, "spiffe://cluster.local/ns/prod/sa/search", "node-1", False),
        ({"u1": {**SEARCH, "service_account": None}}, "spiffe://cluster.local/ns/prod/sa/default", "node-0", True),
        ({"u1": {**SEARCH, "trust_domain": "corp.example"}}, "spiffe://corp.example/ns/prod/sa/search", "node-0", True),
        ({"u1": {**SEARCH, "node": ""}}, "spiffe://cluster.local/ns/prod/sa/search", "", False),
        ({"u1": {**SEARCH, "namespace": None}}, "spiffe://cluster.local/ns/prod/sa/search", "node-0", False),
        (
            {"u1": SEARCH, "u2": {**SEARCH, "uid": "u2", "node": "node-1"}},
            "spiffe://cluster.local/ns/prod/sa/search",
            "node-1",
            True,
        ),
    ],
    ids=[
        "on its node",
        "not on another node",
        "default service account",
        "own trust domain",
        "unscheduled pod grants nothing",
        "no namespace grants nothing",
        "replicas on two nodes",
    ],
)
def test_has_workload_on_node(workloads: dict[str, Any], identity: str, node: str, allowed: bool) -> None:
    placement = TranslatedPlacement()
    placement.update(workloads)
    assert placement.has_workload_on_node(identity, node) is allowed


def test_each_update_replaces_the_view() -> None:
    placement = TranslatedPlacement()
    placement.update({"u1": SEARCH})
    placement.update({})
    assert not placement.has_workload_on_node("spiffe://cluster.local/ns/prod/sa/search", "node-0")
    assert placement.identities() == {}
