"""Rows of `meshctl ztunnel-config` from ztunnel /config_dump documents (pure; table-driven)."""

import pytest

from meshctl.operator.ztunnel_config import COLUMNS, render_table, rows

DUMPS = {
    "node-1": {
        "workloads": [{"uid": "u2", "name": "b", "namespace": "prod", "addresses": ["127.9.1.1"],
                       "tunnel_protocol": "NONE"}],
        "certificates": [],
    },
    "node-0": {
        "workloads": [{"uid": "u1", "name": "a", "namespace": "prod", "addresses": ["127.9.1.0"],
                       "service_account": "search",
                       "waypoint": {"address": {"network": "", "address": "127.9.1.9"}}}],
        "services": [{"name": "s", "namespace": "prod", "hostname": "s.prod.svc.cluster.local",
                      "vips": [{"network": "", "address": "240.240.0.1"}],
                      "ports": [{"service_port": 80, "target_port": 8080}]}],
        "policies": [{"name": "deny", "namespace": "prod", "scope": "NAMESPACE", "action": "DENY", "rules": [{}]}],
        "certificates": [{"identity": "spiffe://cluster.local/ns/prod/sa/search", "state": "Available",
                          "not_after": "2026-11-25T00:00:00+00:00", "serial": 7}],
    },
}


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("workloads", [("node-0", "prod", "a", "127.9.1.0", "HBONE", "search", "127.9.1.9"),
                       ("node-1", "prod", "b", "127.9.1.1", "NONE", "default", "-")]),
        ("services", [("node-0", "prod", "s.prod.svc.cluster.local", "240.240.0.1", "80>8080", "-")]),
        ("policies", [("node-0", "prod", "deny", "NAMESPACE", "DENY", "1")]),
        ("certificates", [("node-0", "spiffe://cluster.local/ns/prod/sa/search", "Available",
                           "2026-11-25T00:00:00+00:00", "7")]),
    ],
)
def test_rows_follow_node_order_and_defaults(section: str, expected: list[tuple[str, ...]]) -> None:
    built = rows(section, DUMPS)
    assert built == expected
    assert all(len(row) == len(COLUMNS[section]) for row in built)


def test_table_aligns_columns() -> None:
    table = render_table(("A", "LONGER"), [("x", "1"), ("yyyy", "2")]).splitlines()
    assert table == ["A     LONGER", "x     1", "yyyy  2"]
