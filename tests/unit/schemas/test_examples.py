"""Istio-documentation-style resources (in ``examples/``) load cleanly and survive a YAML round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.dump import dump_yaml
from schemas.load import load_paths, load_text
from schemas.networking import VirtualService

EXAMPLES = Path(__file__).parent / "examples"
FILES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def test_canary_validates_unchanged() -> None:
    text = (EXAMPLES / "canary.yaml").read_text()
    result = load_text(text, "canary.yaml")
    assert result.ok, [str(e) for e in result.errors]
    (vs,) = result.resources
    assert isinstance(vs, VirtualService)
    assert vs.api_version == "networking.istio.io/v1alpha3"
    assert [(d.destination.subset, d.weight) for d in vs.spec.http[0].route] == [("v1", 95), ("v2", 5)]
    # Unchanged in both directions: dumping what was loaded writes the same text back.
    assert dump_yaml(result.resources) == text


def test_canary_alone_warns_about_its_undefined_subsets() -> None:
    result = load_paths([EXAMPLES / "canary.yaml"])
    assert result.ok
    assert [w.path for w in result.warnings] == [
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].route[1].destination.subset",
    ]
    assert "will get 503" in result.warnings[0].message


@pytest.mark.parametrize("name", FILES)
def test_each_example_is_valid(name: str) -> None:
    result = load_paths([EXAMPLES / name])
    assert result.ok, [str(e) for e in result.errors]
    assert result.resources


def test_examples_as_one_set_have_no_warnings_except_the_bare_canary() -> None:
    result = load_paths([EXAMPLES])
    assert result.ok, [str(e) for e in result.errors]
    assert {w.source for w in result.warnings} == {str(EXAMPLES / "canary.yaml")}
    kinds = {r.kind for r in result.resources}
    assert kinds == {
        "VirtualService",
        "DestinationRule",
        "AuthorizationPolicy",
        "PeerAuthentication",
        "Gateway",
        "HTTPRoute",
        "Namespace",
        "Service",
        "ServiceAccount",
        "Deployment",
    }


@pytest.mark.parametrize("name", FILES)
def test_examples_round_trip_through_yaml(name: str) -> None:
    first = load_paths([EXAMPLES / name])
    again = load_text(dump_yaml(first.resources), "dumped.yaml")
    assert again.ok, [str(e) for e in again.errors]
    assert again.resources == first.resources


def test_origins_name_file_and_document() -> None:
    result = load_paths([EXAMPLES / "fault-injection.yaml"])
    dr, vs = result.resources
    assert (result.origin(dr).document_index, result.origin(vs).document_index) == (1, 2)
    assert result.origin(vs).source == str(EXAMPLES / "fault-injection.yaml")


def test_durations_and_percentages_are_typed() -> None:
    result = load_paths([EXAMPLES / "retries-timeouts.yaml", EXAMPLES / "fault-injection.yaml"])
    details = next(
        r for r in result.resources if isinstance(r, VirtualService) and r.metadata.name == "details"
    )
    first = details.spec.http[0]
    assert first.timeout is not None and first.timeout.seconds == 90.0 and first.timeout.text == "1m30s"
    assert first.retries is not None and first.retries.per_try_timeout is not None
    assert first.retries.per_try_timeout.nanoseconds == 250_000_000
    assert first.mirror_percentage is not None and first.mirror_percentage.value == 12.5
    ratings = next(
        r for r in result.resources if isinstance(r, VirtualService) and r.metadata.name == "ratings"
    )
    fault = ratings.spec.http[1].fault
    assert fault is not None and fault.abort is not None and fault.abort.percentage is not None
    assert fault.abort.percentage.value == 10.0 and isinstance(fault.abort.percentage.value, float)
