"""Whatever YAML arrives, loading reports issues and never crashes.

Documents are generated as arbitrary JSON-like trees, optionally grafted onto a real resource so the
garbage reaches deep fields; the loader must return a LoadResult whose errors all carry a message.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.converter import unstructure
from schemas.load import load_text
from tests.unit.schemas.strategies import resources

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
)


def _graft(data: Any, path: list[int], garbage: Any) -> Any:
    """Replace one value somewhere inside ``data`` (chosen by ``path``) with ``garbage``."""
    if not path or not isinstance(data, dict | list) or not data:
        return garbage
    keys = list(data) if isinstance(data, dict) else list(range(len(data)))
    key = keys[path[0] % len(keys)]
    data[key] = _graft(data[key], path[1:], garbage)
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources(), st.lists(st.integers(0, 50), max_size=8), TREES)
def test_grafted_garbage_is_reported_not_raised(resource: Any, path: list[int], garbage: Any) -> None:
    data = _graft(unstructure(resource), path, garbage)
    result = load_text(yaml.safe_dump(data), "fuzz.yaml")
    assert all(issue.message for issue in result.errors + result.warnings)


@settings(max_examples=100, deadline=None)
@given(TREES)
def test_arbitrary_documents_are_reported_not_raised(garbage: Any) -> None:
    result = load_text(yaml.safe_dump(garbage), "fuzz.yaml")
    if garbage is not None:
        assert not result.ok
