"""What the DNS proxy answers, case by case, as Istio's DNS proxying behaves."""

import pytest

from ztunnel.dns.message import CLASS_IN, Query, Question, RCode, RRType
from ztunnel.dns.resolver import Answer, Forward, decide, search_domains

SERVICES = {"search-api.prod.svc.cluster.local": ["240.240.0.10"]}


def lookup(name: str) -> list[str]:
    return SERVICES.get(name, [])


def q(name: str, qtype: int = RRType.A, *, opcode: int = 0, qclass: int = CLASS_IN) -> Query:
    return Query(1, opcode << 11, Question(name, qtype, qclass))


@pytest.mark.parametrize(
    ("case", "query", "has_upstream", "expected"),
    [
        ("service FQDN answers its VIP", q("search-api.prod.svc.cluster.local"), True,
         Answer(RCode.NOERROR, ("240.240.0.10",))),
        ("trailing dot is the same name", q("search-api.prod.svc.cluster.local."), True,
         Answer(RCode.NOERROR, ("240.240.0.10",))),
        ("known name, type without records is NODATA", q("search-api.prod.svc.cluster.local", RRType.MX), True,
         Answer(RCode.NOERROR)),
        ("search-list miss inside the cluster domain is NXDOMAIN, never forwarded",
         q("search-api.prod.prod.svc.cluster.local"), True, Answer(RCode.NXDOMAIN)),
        ("external name forwards upstream", q("example.org"), True, Forward()),
        ("external name without upstream is NXDOMAIN", q("example.org"), False, Answer(RCode.NXDOMAIN)),
        ("non-query opcode is NOTIMP", q("a.prod.svc.cluster.local", opcode=2), True, Answer(RCode.NOTIMP)),
        ("CHAOS class is refused", q("version.bind", qclass=3), True, Answer(RCode.REFUSED)),
    ],
)
def test_decide(case: str, query: Query, has_upstream: bool, expected: object) -> None:
    assert decide(query, lookup, has_upstream=has_upstream) == expected


def test_search_domains_follow_kubernetes() -> None:
    assert search_domains("prod") == ["prod.svc.cluster.local", "svc.cluster.local", "cluster.local"]
