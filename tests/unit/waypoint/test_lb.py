"""Endpoint choice: each case pins an Envoy load-balancer behaviour behind Istio's loadBalancer field."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.waypoint.binomial import interval_999
from waypoint.lb import LoadBalancer, NoHealthyUpstream, hash_key
from waypoint.model import ClusterPolicy, ConsistentHash, Endpoint, LbAlgorithm, OutlierDetection

EPS = [Endpoint(address=f"10.0.0.{i}", port=8080) for i in range(1, 5)]


def lb(algorithm: LbAlgorithm, **kw: object) -> LoadBalancer:
    if algorithm is LbAlgorithm.RING_HASH and "consistent_hash" not in kw:
        kw["consistent_hash"] = ConsistentHash(header="x-user")
    return LoadBalancer(ClusterPolicy(lb=algorithm, **kw), cluster="outbound|8080||svc")  # type: ignore[arg-type]


def test_round_robin_cycles_in_order() -> None:
    balancer = lb(LbAlgorithm.ROUND_ROBIN)
    rng = random.Random(0)
    picks = [balancer.choose(EPS, rng).address for _ in range(8)]
    assert picks == [e.address for e in EPS] * 2


def test_weighted_round_robin_interleaves_in_proportion() -> None:
    heavy = Endpoint(address="10.0.1.1", port=80, weight=3)
    light = Endpoint(address="10.0.1.2", port=80, weight=1)
    balancer = lb(LbAlgorithm.ROUND_ROBIN)
    picks = [balancer.choose([heavy, light], random.Random(0)).address for _ in range(8)]
    assert Counter(picks) == {"10.0.1.1": 6, "10.0.1.2": 2}
    assert picks[:4].count("10.0.1.2") == 1  # smooth: not three heavies then the light one at the end only


@pytest.mark.parametrize("algorithm", list(LbAlgorithm))
def test_every_algorithm_skips_ejected_endpoints(algorithm: LbAlgorithm) -> None:
    balancer = lb(algorithm)
    rng = random.Random(5)
    ejected = {EPS[0].key, EPS[2].key}
    picks = {balancer.choose(EPS, rng, ejected=ejected, hash_key=f"user{i}").key for i in range(200)}
    assert picks == {EPS[1].key, EPS[3].key}


@pytest.mark.parametrize("algorithm", list(LbAlgorithm))
def test_no_usable_endpoint_is_UH(algorithm: LbAlgorithm) -> None:
    balancer = lb(algorithm)
    with pytest.raises(NoHealthyUpstream) as info:
        balancer.choose(EPS, random.Random(0), ejected={e.key for e in EPS})
    assert info.value.response_flag == "UH"
    assert "4 endpoint(s), 4 ejected" in str(info.value)
    with pytest.raises(NoHealthyUpstream):
        balancer.choose([], random.Random(0))


def test_min_health_percent_panic_uses_all_endpoints() -> None:
    balancer = lb(LbAlgorithm.ROUND_ROBIN, outlier_detection=OutlierDetection(min_health_percent=50))
    ejected = {e.key for e in EPS[:3]}  # 25 % healthy < 50 % → panic
    picks = {balancer.choose(EPS, random.Random(0), ejected=ejected).key for _ in range(8)}
    assert picks == {e.key for e in EPS}


def test_least_request_p2c_prefers_the_less_loaded_of_two() -> None:
    a, b = EPS[0], EPS[1]
    balancer = lb(LbAlgorithm.LEAST_REQUEST)
    for _ in range(5):
        balancer.request_started(a)
    rng = random.Random(11)
    picks = Counter(balancer.choose([a, b], rng).key for _ in range(2000))
    # P2C over two hosts: ``a`` only wins when both random picks land on it (probability 1/4).
    assert 350 <= picks[a.key] <= 650 and picks[b.key] > 3 * picks[a.key] - 200


def test_least_request_accounting_returns_to_zero() -> None:
    balancer = lb(LbAlgorithm.LEAST_REQUEST)
    balancer.request_started(EPS[0])
    balancer.request_started(EPS[0])
    balancer.request_finished(EPS[0])
    assert balancer.active_requests(EPS[0]) == 1
    balancer.request_finished(EPS[0])
    balancer.request_finished(EPS[0])  # an extra finish never goes negative
    assert balancer.active_requests(EPS[0]) == 0


def test_random_covers_all_endpoints_roughly_evenly() -> None:
    balancer = lb(LbAlgorithm.RANDOM)
    rng = random.Random(2)
    counts = Counter(balancer.choose(EPS, rng).key for _ in range(4000))
    assert set(counts) == {e.key for e in EPS}
    assert all(850 <= c <= 1150 for c in counts.values())


def test_ring_hash_same_key_same_endpoint() -> None:
    balancer = lb(LbAlgorithm.RING_HASH)
    rng = random.Random(0)
    first = {f"user{i}": balancer.choose(EPS, rng, hash_key=f"user{i}").key for i in range(100)}
    again = {f"user{i}": balancer.choose(EPS, rng, hash_key=f"user{i}").key for i in range(100)}
    assert first == again
    assert len(set(first.values())) == len(EPS)  # keys spread over every endpoint


def test_ring_hash_minimal_remap_when_an_endpoint_leaves() -> None:
    balancer = lb(LbAlgorithm.RING_HASH)
    rng = random.Random(0)
    keys = [f"session-{i}" for i in range(1000)]
    before = {k: balancer.choose(EPS, rng, hash_key=k).key for k in keys}
    gone = EPS[1]
    after = {k: balancer.choose(EPS, rng, hash_key=k, ejected={gone.key}).key for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == gone.key}


def test_ring_hash_without_key_picks_randomly() -> None:
    balancer = lb(LbAlgorithm.RING_HASH)
    rng = random.Random(9)
    assert len({balancer.choose(EPS, rng).key for _ in range(200)}) == len(EPS)


def test_retry_reselects_up_to_five_times_to_avoid_the_tried_host() -> None:
    """Envoy's previous_hosts predicate re-picks at most 5 times: with two hosts picked at random the
    tried one is still chosen with probability (1/2)^5 = 1/32, instead of 1/2."""
    balancer = lb(LbAlgorithm.RANDOM)
    rng = random.Random(4)
    n = 3200
    again = sum(balancer.choose(EPS[:2], rng, avoid={EPS[0].key}).key == EPS[0].key for _ in range(n))
    low, high = interval_999(n, 1 / 32)
    assert low <= again <= high


def test_ring_hash_retry_walks_past_the_tried_host() -> None:
    balancer = lb(LbAlgorithm.RING_HASH)
    rng = random.Random(0)
    first = balancer.choose(EPS, rng, hash_key="k")
    second = balancer.choose(EPS, rng, hash_key="k", avoid={first.key})
    assert second.key != first.key


def test_avoid_is_best_effort_when_only_the_tried_host_is_left() -> None:
    balancer = lb(LbAlgorithm.ROUND_ROBIN)
    assert balancer.choose(EPS[:1], random.Random(0), avoid={EPS[0].key}) == EPS[0]


HASH_KEY_CASES = [
    ("header", ConsistentHash(header="X-User"), [(b"x-user", b"alice")], "alice"),
    ("header-absent", ConsistentHash(header="x-user"), [], None),
    ("cookie", ConsistentHash(cookie="session"), [(b"cookie", b"a=1; session=s42")], "s42"),
    ("cookie-absent", ConsistentHash(cookie="session"), [(b"cookie", b"a=1")], None),
    ("source-ip", ConsistentHash(use_source_ip=True), [], "10.9.8.7"),
]


@pytest.mark.parametrize(("policy", "headers", "expected"), [c[1:] for c in HASH_KEY_CASES],
                         ids=[c[0] for c in HASH_KEY_CASES])
def test_hash_key_sources(
    policy: ConsistentHash, headers: list[tuple[bytes, bytes]], expected: str | None
) -> None:
    assert hash_key(policy, headers, "10.9.8.7") == expected


@given(st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=6))
def test_weighted_round_robin_gives_each_endpoint_exactly_its_weight_per_cycle(weights: list[int]) -> None:
    endpoints = [Endpoint(address=f"10.2.0.{i}", port=80, weight=w) for i, w in enumerate(weights)]
    balancer = lb(LbAlgorithm.ROUND_ROBIN)
    rng = random.Random(0)
    for _cycle in range(2):
        counts = Counter(balancer.choose(endpoints, rng).key for _ in range(sum(weights)))
        assert counts == {e.key: e.weight for e in endpoints}
