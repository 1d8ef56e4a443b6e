"""Hypothesis strategies for any user resource, derived from the attrs classes and their metadata.

Walking the same field types and constraints the converter and the CRD generator use means a new
field is covered by the round-trip tests without anyone writing a strategy for it.
"""

from __future__ import annotations

import enum
import string
import typing
from typing import Any

import attrs
from hypothesis import strategies as st

from schemas.common import Duration, yaml_key
from schemas.converter import is_int_or_string, is_list, is_map, is_optional, record_fields, strip_optional
from schemas.kinds import KINDS

TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-._/ :*#é", max_size=10)
UNITS = ("h", "m", "s", "ms", "us", "ns")


def durations() -> st.SearchStrategy[Duration]:
    part = st.tuples(st.integers(0, 999), st.sampled_from(UNITS)).map(lambda p: f"{p[0]}{p[1]}")
    return st.lists(part, min_size=1, max_size=3).map(lambda parts: Duration.parse("".join(parts)))


def for_type(kind: Any, metadata: Any = None) -> st.SearchStrategy[Any]:
    md = metadata or {}
    if is_optional(kind):
        return st.none() | for_type(strip_optional(kind), md)
    if kind is Duration:
        return durations()
    if is_int_or_string(kind):
        return st.integers(1, 65535) | TEXT
    if kind is bool:
        return st.booleans()
    if kind is int:
        return st.integers(int(md.get("minimum", -(2**31))), int(md.get("maximum", 2**31)))
    if kind is float:
        return st.floats(md.get("minimum", -1e9), md.get("maximum", 1e9), allow_nan=False)
    if kind is str and "pattern" in md:
        return st.from_regex(md["pattern"], fullmatch=True)
    if kind is str:
        return TEXT
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return st.sampled_from(list(kind))
    if is_list(kind):
        item = typing.get_args(kind)[0]
        return st.lists(for_type(item), min_size=md.get("min_items", 0), max_size=3).map(tuple)
    if is_map(kind):
        key_type, value_type = typing.get_args(kind)
        keys = st.integers(1, 65535) if key_type is int else TEXT
        return st.dictionaries(keys, for_type(value_type), max_size=3)
    if attrs.has(kind):
        return records(kind)
    raise TypeError(f"no strategy for {kind!r}")


@st.composite
def _record(draw: st.DrawFn, cls: type) -> Any:
    one_of: tuple[str, ...] = getattr(cls, "ONE_OF", ())
    chosen: set[str] = set()
    if one_of:
        low = 1 if getattr(cls, "ONE_OF_REQUIRED", False) else 0
        chosen = set(draw(st.lists(st.sampled_from(one_of), min_size=low, max_size=1)))
    kwargs: dict[str, Any] = {}
    for field in record_fields(cls):
        key = yaml_key(field)
        if key in one_of:
            inner = for_type(strip_optional(field.type), field.metadata)
            kwargs[field.name] = draw(inner) if key in chosen else None
        elif field.name == "kind" and hasattr(cls, "KIND"):
            kwargs[field.name] = cls.KIND
        elif field.name == "api_version" and hasattr(cls, "API_VERSIONS"):
            kwargs[field.name] = draw(st.sampled_from(cls.API_VERSIONS))
        else:
            kwargs[field.name] = draw(for_type(field.type, field.metadata))
    return cls(**kwargs)


def records(cls: type) -> st.SearchStrategy[Any]:
    return st.deferred(lambda: _record(cls))


def resources() -> st.SearchStrategy[Any]:
    return st.sampled_from([info.cls for info in KINDS.values()]).flatmap(records)
