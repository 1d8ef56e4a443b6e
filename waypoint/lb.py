"""Endpoint choice inside one cluster, with Envoy's algorithms and Istio's defaults.

* ROUND_ROBIN: equal weights rotate; unequal weights use smooth weighted round robin (Envoy uses an
  EDF scheduler; both interleave hosts in proportion to weight).
* LEAST_REQUEST: Envoy's power of two choices when weights are equal — two random picks (possibly the
  same host), keep the one with fewer active requests. With unequal weights each host's chance is
  ``weight / (active + 1)`` (Envoy's default active-request bias of 1.0).
* RANDOM: uniform over the healthy hosts.
* RING_HASH (Istio ``consistentHash``): a hash ring; the same key lands on the same endpoint. Each
  endpoint contributes a fixed number of points per unit of weight, independent of the others, so when
  an endpoint leaves only the keys it owned move. A request without a hash key gets a random point, as
  in Envoy.

Ejected endpoints are skipped. Istio's ``minHealthPercent`` (default 0) is Envoy's panic threshold:
below it, all endpoints are used. With nothing usable the pick fails with ``UH``.

Retries ask to avoid hosts already tried (Istio installs Envoy's ``previous_hosts`` predicate with 5
selection attempts): the pick is repeated up to that many times and the last pick is kept if all hit.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Collection, Iterable, Sequence
from http.cookies import CookieError, SimpleCookie

from meshcore.errors import MeshError
from waypoint.model import ClusterPolicy, ConsistentHash, Endpoint, LbAlgorithm


class NoHealthyUpstream(MeshError):
    response_flag = "UH"
    hint = (
        "cluster {cluster} has {total} endpoint(s), {ejected} ejected by outlier detection; check that the "
        "subset's labels select running workloads"
    )


RING_POINTS_PER_WEIGHT = 256


def _hash64(text: str) -> int:
    """A process-independent 64-bit hash (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def hash_key(policy: ConsistentHash, headers: Iterable[tuple[bytes, bytes]], source_ip: str,
             query: dict[str, str] | None = None) -> str | None:
    """The value Istio's ``consistentHash`` hashes on, or None when the request does not carry it."""
    if policy.use_source_ip:
        return source_ip
    if policy.query_parameter is not None:
        return (query or {}).get(policy.query_parameter)
    pairs = list(headers)
    if policy.header is not None:
        name = policy.header.encode("latin-1")
        values = [v.decode("latin-1") for k, v in pairs if k == name]
        return ",".join(values) if values else None
    assert policy.cookie is not None
    for key, value in pairs:
        if key != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value.decode("latin-1"))
        except CookieError:
            continue
        if policy.cookie in jar:
            return jar[policy.cookie].value
    return None


class _Ring:
    """A sorted ring of (point, endpoint) built once per healthy set."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        entries: list[tuple[int, int]] = []
        for index, endpoint in enumerate(endpoints):
            for replica in range(endpoint.weight * RING_POINTS_PER_WEIGHT):
                entries.append((_hash64(f"{endpoint.key}_{replica}"), index))
        entries.sort()
        self._points = [point for point, _ in entries]
        self._owners = [index for _, index in entries]
        self._endpoints = list(endpoints)

    def lookup(self, point: int, step: int) -> Endpoint:
        """The endpoint owning ``point``, or ``step`` entries further round the ring (retries)."""
        index = bisect.bisect_left(self._points, point)
        return self._endpoints[self._owners[(index + step) % len(self._points)]]


class LoadBalancer:
    """Per-cluster balancer state: the round-robin cursor, active-request counts, the hash ring."""

    def __init__(self, policy: ClusterPolicy, *, cluster: str = "") -> None:
        self.policy = policy
        self.cluster = cluster
        self._active: dict[str, int] = {}
        self._rr_index = 0
        self._swrr: dict[str, int] = {}
        self._ring: _Ring | None = None
        self._ring_members: tuple[tuple[str, int], ...] = ()

    # -- active request accounting (LEAST_REQUEST reads it; the shell reports it) --------------------

    def request_started(self, endpoint: Endpoint) -> None:
        self._active[endpoint.key] = self._active.get(endpoint.key, 0) + 1

    def request_finished(self, endpoint: Endpoint) -> None:
        count = self._active.get(endpoint.key, 0) - 1
        if count > 0:
            self._active[endpoint.key] = count
        else:
            self._active.pop(endpoint.key, None)

    def active_requests(self, endpoint: Endpoint) -> int:
        return self._active.get(endpoint.key, 0)

    # -- choice -------------------------------------------------------------------------------------

    def usable(self, endpoints: Sequence[Endpoint], ejected: Collection[str]) -> list[Endpoint]:
        """Healthy (non-ejected) endpoints, or all of them in panic (below ``minHealthPercent``)."""
        healthy = [e for e in endpoints if e.key not in ejected]
        detection = self.policy.outlier_detection
        threshold = detection.min_health_percent if detection is not None else 0
        if endpoints and threshold > 0 and 100 * len(healthy) < threshold * len(endpoints):
            return list(endpoints)
        return healthy

    def choose(
        self,
        endpoints: Sequence[Endpoint],
        rng: random.Random,
        *,
        ejected: Collection[str] = frozenset(),
        hash_key: str | None = None,
        avoid: Collection[str] = frozenset(),
        selection_attempts: int = 5,
    ) -> Endpoint:
        """One endpoint for the next attempt; raises :class:`NoHealthyUpstream` (``UH``) if none is usable."""
        candidates = self.usable(endpoints, ejected)
        if not candidates:
            raise NoHealthyUpstream(
                f"no healthy upstream for {self.cluster or 'cluster'}",
                cluster=self.cluster or "?", total=len(endpoints), ejected=len(ejected),
            )
        point = None
        if self.policy.lb is LbAlgorithm.RING_HASH:
            point = _hash64(hash_key) if hash_key is not None else rng.getrandbits(64)
        tries = max(1, selection_attempts) if avoid else 1
        pick = candidates[0]
        for attempt in range(tries):
            pick = self._pick_once(candidates, rng, point, attempt)
            if pick.key not in avoid:
                return pick
        return pick

    def _pick_once(
        self, candidates: list[Endpoint], rng: random.Random, point: int | None, attempt: int
    ) -> Endpoint:
        algorithm = self.policy.lb
        if algorithm is LbAlgorithm.RING_HASH:
            assert point is not None
            return self._ring_for(candidates).lookup(point, attempt)
        if algorithm is LbAlgorithm.RANDOM:
            return candidates[rng.randrange(len(candidates))]
        if algorithm is LbAlgorithm.LEAST_REQUEST:
            return self._least_request(candidates, rng)
        return self._round_robin(candidates)

    def _round_robin(self, candidates: list[Endpoint]) -> Endpoint:
        if all(e.weight == candidates[0].weight for e in candidates):
            pick = candidates[self._rr_index % len(candidates)]
            self._rr_index += 1
            return pick
        # Smooth weighted round robin: raise all by their weight, take the highest, lower it by the total.
        total = sum(e.weight for e in candidates)
        best: Endpoint | None = None
        for endpoint in candidates:
            current = self._swrr.get(endpoint.key, 0) + endpoint.weight
            self._swrr[endpoint.key] = current
            if best is None or current > self._swrr[best.key]:
                best = endpoint
        assert best is not None
        self._swrr[best.key] -= total
        return best

    def _least_request(self, candidates: list[Endpoint], rng: random.Random) -> Endpoint:
        if all(e.weight == candidates[0].weight for e in candidates):
            first = candidates[rng.randrange(len(candidates))]
            second = candidates[rng.randrange(len(candidates))]
            return second if self.active_requests(second) < self.active_requests(first) else first
        weights = [e.weight / (self.active_requests(e) + 1) for e in candidates]
        return rng.choices(candidates, weights=weights, k=1)[0]

    def _ring_for(self, candidates: list[Endpoint]) -> _Ring:
        members = tuple((e.key, e.weight) for e in candidates)
        if self._ring is None or members != self._ring_members:
            self._ring = _Ring(candidates)
            self._ring_members = members
        return self._ring
