"""Readiness reasons and the config dump's shape, from plain facts."""

from __future__ import annotations

import pytest

from ztunnel.admin import ReadinessFacts, config_dump, readiness

READY = ReadinessFacts(draining=False, generation=1, missing_certificates=(), pending_listeners=())


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (READY, None),
        (ReadinessFacts(draining=True, generation=1, missing_certificates=(), pending_listeners=()), "draining"),
        (ReadinessFacts(draining=False, generation=0, missing_certificates=(), pending_listeners=()),
         "waiting for the first state sync"),
        (ReadinessFacts(draining=False, generation=3, missing_certificates=("spiffe://td/ns/b/sa/x",
                                                                           "spiffe://td/ns/a/sa/y"),
                        pending_listeners=("uid",)),
         "certificates missing for spiffe://td/ns/a/sa/y, spiffe://td/ns/b/sa/x"),
        (ReadinessFacts(draining=False, generation=3, missing_certificates=(), pending_listeners=("u2", "u1")),
         "listeners not running for u1, u2"),
        (ReadinessFacts(draining=False, generation=3, missing_certificates=(), pending_listeners=("u1",),
                        listener_errors={"u1": "cannot listen on 10.0.0.1: [Errno 99]"}),
         "u1: cannot listen on 10.0.0.1: [Errno 99]"),
    ],
)
def test_readiness(facts: ReadinessFacts, reason: str | None) -> None:
    assert readiness(facts) == reason


def test_config_dump_carries_state_certificates_and_listeners() -> None:
    snapshot = {"generation": 2, "synced": ["workload"], "workloads": [{"uid": "a"}], "services": [],
                "policies": [{"name": "p"}]}
    dump = config_dump(
        node="n", node_address="127.1.0.1", snapshot=snapshot,
        certificates=[{"identity": "spiffe://td/ns/a/sa/b", "state": "Available"}],
        listeners=[{"workload": "a", "hbone": "127.1.1.1:15008"}], listener_errors={},
        pool={"connections": 0}, draining=False, open_connections=0,
    )
    assert dump["workloads"] == [{"uid": "a"}] and dump["policies"] == [{"name": "p"}]
    assert dump["certificates"][0]["state"] == "Available"
    assert dump["listeners"][0]["hbone"] == "127.1.1.1:15008"
    assert (dump["generation"], dump["node"]) == (2, "n")
