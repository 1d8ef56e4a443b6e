"""structure(unstructure(x)) == x for generated resources, directly and through YAML text."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

from schemas.converter import converter, structure, unstructure
from schemas.dump import dump_yaml
from schemas.kinds import KINDS
from tests.unit.schemas.strategies import resources

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(resources())
def test_converter_round_trip(resource: Any) -> None:
    assert converter.structure(converter.unstructure(resource), type(resource)) == resource


@SETTINGS
@given(resources())
def test_yaml_text_round_trip(resource: Any) -> None:
    (data,) = yaml.safe_load_all(dump_yaml([resource]))
    assert structure(data, type(resource)) == resource


@SETTINGS
@given(resources())
def test_unstructured_form_uses_yaml_keys(resource: Any) -> None:
    data = unstructure(resource)
    assert data["apiVersion"] in KINDS[(resource.api_version.rpartition("/")[0], resource.kind)].api_versions
    assert data["kind"] == resource.kind
    assert "api_version" not in data and "metadata" in data
