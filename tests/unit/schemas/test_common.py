"""Durations, field keys and issue formatting: the small pieces every resource relies on."""

from __future__ import annotations

import attrs
import pytest

from schemas.common import Duration, DurationSyntaxError, yaml_key
from schemas.core import ServiceSpec
from schemas.errors import Issue, MapKey, Severity, did_you_mean, format_path
from schemas.networking import OutlierDetection
from schemas.security import Rule

SECOND = 10**9


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("5s", 5 * SECOND),
        ("250ms", SECOND // 4),
        ("1m30s", 90 * SECOND),
        ("0.5s", SECOND // 2),
        ("1h", 3600 * SECOND),
        ("2h45m", (2 * 3600 + 45 * 60) * SECOND),
        ("1.5m", 90 * SECOND),
        ("10us", 10_000),
        ("10µs", 10_000),
        ("7ns", 7),
        ("0s", 0),
    ],
)
def test_duration_parses_go_style_text(text: str, nanoseconds: int) -> None:
    duration = Duration.parse(text)
    assert duration.nanoseconds == nanoseconds
    assert duration.text == text == str(duration)


@pytest.mark.parametrize("text", ["", "5", "s", "-5s", "5 s", "5sec", "1d", ".5s", "5s "])
def test_duration_rejects_what_istio_rejects(text: str) -> None:
    with pytest.raises(DurationSyntaxError):
        Duration.parse(text)


def test_duration_from_seconds_writes_decimal_seconds() -> None:
    assert Duration.from_seconds(0.25) == Duration(nanoseconds=SECOND // 4, text="0.25s")
    assert Duration.from_seconds(3) == Duration(nanoseconds=3 * SECOND, text="3s")
    assert Duration.parse(Duration.from_seconds(1.125).text).seconds == 1.125


@pytest.mark.parametrize(
    ("cls", "name", "key"),
    [
        (OutlierDetection, "consecutive_5xx_errors", "consecutive5xxErrors"),
        (OutlierDetection, "base_ejection_time", "baseEjectionTime"),
        (Rule, "from_", "from"),
        (ServiceSpec, "cluster_ip", "clusterIP"),
    ],
)
def test_yaml_keys(cls: type, name: str, key: str) -> None:
    assert yaml_key(attrs.fields_dict(cls)[name]) == key


def test_paths_quote_map_keys() -> None:
    path = ("spec", "http", 0, "match", 1, "headers", MapKey("end-user"), "exact")
    assert format_path(path) == 'spec.http[0].match[1].headers["end-user"].exact'
    assert format_path(("spec", "portLevelMtls", MapKey(8080))) == "spec.portLevelMtls[8080]"


def test_did_you_mean() -> None:
    assert did_you_mean("wieght", ["weight", "destination"]) == ' (did you mean "weight"?)'
    assert did_you_mean("clusterip", ["clusterIP", "selector"]) == ' (did you mean "clusterIP"?)'
    assert did_you_mean("zzz", ["weight"]) == ""


def test_issue_without_namespace_or_document() -> None:
    issue = Issue(
        source="a.yaml", document_index=None, kind=None, namespace=None, name=None, path="", message="x"
    )
    assert str(issue) == "a.yaml: x"
    named = attrs.evolve(
        issue, document_index=3, kind="Gateway", name="waypoint", path="spec", severity=Severity.WARNING
    )
    assert str(named) == "a.yaml: document 3 (Gateway waypoint): spec: x"
