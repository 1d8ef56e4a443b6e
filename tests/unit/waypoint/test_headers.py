"""Header mutation order and authority helpers, as Envoy applies them."""

from __future__ import annotations

import pytest

from waypoint.headers import apply_all, apply_header_ops, normalize_path, shadow_authority, split_authority
from waypoint.model import HeaderOps

BASE = [(b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"b")]

OPS_CASES = [
    ("set-replaces-every-copy", HeaderOps(set=(("X-A", "new"),)), [(b"x-b", b"b"), (b"x-a", b"new")]),
    ("add-appends-keeping-existing", HeaderOps(add=(("x-b", "c"),)), [*BASE, (b"x-b", b"c")]),
    ("remove-drops-every-copy", HeaderOps(remove=("x-a",)), [(b"x-b", b"b")]),
    ("remove-then-set-leaves-the-new-value", HeaderOps(remove=("x-b",), set=(("x-b", "z"),)),
     [(b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"z")]),
    ("empty-ops-are-identity", HeaderOps(), BASE),
]


@pytest.mark.parametrize(("ops", "expected"), [c[1:] for c in OPS_CASES], ids=[c[0] for c in OPS_CASES])
def test_header_ops(ops: HeaderOps, expected: list[tuple[bytes, bytes]]) -> None:
    assert apply_header_ops(BASE, ops) == expected


def test_levels_apply_in_order_so_the_last_set_wins() -> None:
    result = apply_all([], [HeaderOps(set=(("x", "dest"),)), HeaderOps(set=(("x", "route"),))])
    assert result == [(b"x", b"route")]


@pytest.mark.parametrize(("authority", "shadow"), [
    ("svc:8080", "svc-shadow:8080"), ("svc", "svc-shadow"), ("[fd00::1]:80", "[fd00::1]-shadow:80"),
])
def test_mirror_authority_gets_shadow_suffix_before_port(authority: str, shadow: str) -> None:
    assert shadow_authority(authority) == shadow


@pytest.mark.parametrize(("authority", "parts"), [
    ("svc:8080", ("svc", 8080)), ("svc", ("svc", None)),
    ("[::1]:9", ("[::1]", 9)), ("[::1]", ("[::1]", None)),
])
def test_split_authority(authority: str, parts: tuple[str, int | None]) -> None:
    assert split_authority(authority) == parts


@pytest.mark.parametrize(("raw", "normalized"), [
    ("/a/b", "/a/b"),
    ("/api/../admin", "/admin"),
    ("/api/%2e%2E/admin/x", "/admin/x"),
    ("/./a/./b", "/a/b"),
    ("/../../etc", "/etc"),
    ("/a/b/..", "/a/"),
    ("/a/b/.", "/a/b/"),
    ("/a//b", "/a//b"),
    ("/a%2fb", "/a%2Fb"),
    ("/a/../b?x=/../y", "/b?x=/../y"),
    ("*", "*"),
], ids=["clean", "dot-dot", "encoded-dot-dot", "dot", "above-root", "trailing-dot-dot", "trailing-dot",
        "slashes-not-merged", "percent-hex-uppercased", "query-untouched", "asterisk-form"])
def test_istio_base_path_normalization(raw: str, normalized: str) -> None:
    assert normalize_path(raw) == normalized
