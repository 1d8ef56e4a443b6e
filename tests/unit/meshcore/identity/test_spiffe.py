from __future__ import annotations

import pytest

from meshcore.identity.errors import InvalidSpiffeId
from meshcore.identity.spiffe import Identity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spiffe://cluster.local/ns/default/sa/bookinfo", Identity("cluster.local", "default", "bookinfo")),
        ("cluster.local/ns/prod/sa/search-api", Identity("cluster.local", "prod", "search-api")),
        ("spiffe://example.org/ns/a.b/sa/c_d", Identity("example.org", "a.b", "c_d")),
    ],
)
def test_parse_uri_and_principal(text: str, expected: Identity) -> None:
    assert Identity.parse(text) == expected


def test_formats_round_trip() -> None:
    ident = Identity("cluster.local", "prod", "client")
    assert ident.uri == "spiffe://cluster.local/ns/prod/sa/client"
    assert ident.principal == "cluster.local/ns/prod/sa/client"
    assert str(ident) == ident.uri
    assert Identity.parse(ident.uri) == Identity.parse(ident.principal) == ident


@pytest.mark.parametrize(
    "text",
    [
        "",
        "spiffe://cluster.local/ns/default",
        "spiffe://cluster.local/sa/x/ns/y",
        "spiffe://cluster.local/ns/default/sa/x/extra",
        "spiffe://Cluster Local/ns/default/sa/x",
        "spiffe://cluster.local/ns//sa/x",
        "spiffe://cluster.local/ns/-bad/sa/x",
        "https://cluster.local/ns/a/sa/b",
    ],
)
def test_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidSpiffeId) as info:
        Identity.parse(text)
    assert "spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>" in str(info.value)
