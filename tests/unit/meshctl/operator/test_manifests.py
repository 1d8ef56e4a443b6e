"""The resources the operator verbs write, validated by the same schemas istiod_lite uses."""

import pytest
import yaml

from meshctl.operator.manifests import (
    CanarySpecError,
    SubsetWeight,
    canary_resources,
    namespace_with_mode,
    parse_weights,
)
from schemas.load import load_text


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ((), "at least one"),
        (("v1=95", "v2=4"), "add up to 99"),
        (("v1=95", "v1=5"), "named twice"),
        (("v1:95", "v2=5"), "is not SUBSET=WEIGHT"),
        (("V1=100",), "is not SUBSET=WEIGHT"),
        (("v1=95.5", "v2=4.5"), "is not SUBSET=WEIGHT"),
    ],
)
def test_weights_istio_would_refuse_are_explained(items: tuple[str, ...], message: str) -> None:
    with pytest.raises(CanarySpecError, match=message):
        parse_weights(items)


def test_canary_is_a_virtual_service_and_destination_rule_that_validate() -> None:
    manifests = canary_resources(
        "search-service", "prod", parse_weights(["v1=95", "v2=5"]), host="search-api.prod.svc.cluster.local"
    )
    result = load_text(yaml.safe_dump_all(manifests), "canary")
    assert result.ok and not result.warnings, [str(i) for i in result.errors + result.warnings]
    vs, dr = manifests
    assert vs["spec"]["hosts"] == ["search-api.prod.svc.cluster.local"]
    assert [(r["destination"]["subset"], r["weight"]) for r in vs["spec"]["http"][0]["route"]] == [
        ("v1", 95),
        ("v2", 5),
    ]
    assert dr["spec"]["subsets"] == [{"name": "v1", "labels": {"version": "v1"}},
                                     {"name": "v2", "labels": {"version": "v2"}}]


def test_rollback_to_one_subset_still_defines_both() -> None:
    vs, dr = canary_resources("web", "prod", [SubsetWeight("v1", 100), SubsetWeight("v2", 0)])
    assert vs["spec"]["hosts"] == ["web.prod.svc.cluster.local"]
    assert [s["name"] for s in dr["spec"]["subsets"]] == ["v1", "v2"]


def test_enroll_keeps_other_labels_and_unenroll_removes_only_ours() -> None:
    existing = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"team": "a"}}}
    enrolled = namespace_with_mode(existing, "prod", enrolled=True)
    assert enrolled["metadata"]["labels"] == {"team": "a", "istio.io/dataplane-mode": "ambient"}
    assert existing["metadata"]["labels"] == {"team": "a"}, "the input is not modified"
    assert namespace_with_mode(enrolled, "prod", enrolled=False)["metadata"]["labels"] == {"team": "a"}
    fresh = namespace_with_mode(None, "new", enrolled=True)
    assert load_text(yaml.safe_dump(fresh), "ns").ok
