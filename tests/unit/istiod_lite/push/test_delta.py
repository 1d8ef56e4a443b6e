"""Deltas carry only changed and removed resources; versions are content hashes."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.push.delta import Delta, compute_delta, version_of

A1, A2, B1 = {"port": 80}, {"port": 8080}, {"port": 90}


@pytest.mark.parametrize(
    ("base", "new", "expected"),
    [
        (None, {"a": A1, "b": B1}, Delta(upserts={"a": A1, "b": B1}, removed=(), full=True)),
        (None, {}, Delta(upserts={}, removed=(), full=True)),
        ({"a": A1, "b": B1}, {"a": A2, "b": B1}, Delta(upserts={"a": A2}, removed=(), full=False)),
        ({"a": A1, "b": B1}, {"a": A1}, Delta(upserts={}, removed=("b",), full=False)),
        ({"a": A1}, {"a": A1, "c": B1}, Delta(upserts={"c": B1}, removed=(), full=False)),
        ({"b": B1, "a": A1}, {"a": A1, "b": B1}, Delta(upserts={}, removed=(), full=False)),
        ({"z": A1, "y": A1, "a": A1}, {"a": A2}, Delta(upserts={"a": A2}, removed=("y", "z"), full=False)),
    ],
    ids=["connect", "connect-empty", "changed", "removed", "added", "unchanged", "mixed"],
)
def test_delta_holds_only_what_changed(
    base: dict[str, Any] | None, new: dict[str, Any], expected: Delta
) -> None:
    delta = compute_delta(base, new)
    assert delta == expected
    assert delta.empty == (expected.upserts == {} and expected.removed == () and not expected.full)


def test_versions_depend_on_content_only() -> None:
    assert version_of({"a": {"x": 1, "y": 2}, "b": {}}) == version_of({"b": {}, "a": {"y": 2, "x": 1}})
    assert version_of({"a": {"x": 1}}) != version_of({"a": {"x": 2}})
    assert version_of({}) != version_of({"a": {}})
    assert len(version_of({})) == 16
