"""The generated CRDs: committed and current, valid for Kubernetes, and agreeing with schemas/.

"Agreeing" means: for every example document (valid and invalid), the CRD's openAPIV3Schema checked
with jsonschema — with unknown fields rejected, as ``kubectl apply --validate=strict`` does — gives
the same verdict as ``schemas.load``. Rules a structural schema cannot state (weights summing to
100, duplicate subsets …) are listed separately: only schemas/ catches those, as only Istio's
webhook does for Istio.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from schemas.crds import custom_kinds, file_name, render, resource_schema, write_all
from schemas.kinds import KINDS, split_api_version
from schemas.load import load_text
from tests.unit.schemas.test_invalid import CASES

REPO = Path(__file__).parents[3]
CRD_DIR = REPO / "deploy" / "crds"
EXAMPLES = Path(__file__).parent / "examples"
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# Invalid documents whose fault is in the shape (types, enums, unknown fields, ranges, one-of).
SHAPE_CASES = {
    "weight-string", "weight-range", "unknown-field-hint", "hosts-missing", "hosts-empty", "hosts-not-list",
    "destination-host-missing", "timeout-bare-number", "per-try-timeout-unit", "retry-attempts-type",
    "match-two-kinds", "header-match-typo", "fault-percent-range", "abort-status-missing",
    "delay-without-duration", "port-range", "tls-routes-unsupported", "lb-enum", "consistent-hash-empty",
    "outlier-percent", "connection-pool-type", "audit-unsupported", "custom-unsupported", "action-enum",
    "operation-port-int", "source-typo", "mtls-mode", "backend-weight-type", "path-type-enum",
    "parent-name-missing", "route-timeout", "gateway-listeners-empty", "port-level-settings",
    "delay-percent-deprecated", "listener-tls",
}  # fmt: skip
# Invalid documents whose fault only a cross-field rule sees.
RULE_CASES = {
    "weight-sum", "bad-regex", "route-or-redirect", "mirror-percentage-alone", "duplicate-subset",
    "selector-and-targetrefs", "port-level-needs-selector", "filter-union", "backend-port-missing",
}  # fmt: skip


def test_committed_crds_are_up_to_date(tmp_path: Path) -> None:
    written = write_all(tmp_path)
    assert sorted(p.name for p in CRD_DIR.glob("*.yaml")) == sorted(p.name for p in written)
    for path in written:
        assert (CRD_DIR / path.name).read_text() == path.read_text(), f"run `make crds`: {path.name} is stale"


def test_one_crd_per_custom_kind_with_every_version_served() -> None:
    assert {(i.group, i.kind) for i in custom_kinds()} == {
        ("networking.istio.io", "VirtualService"),
        ("networking.istio.io", "DestinationRule"),
        ("security.istio.io", "AuthorizationPolicy"),
        ("security.istio.io", "PeerAuthentication"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "HTTPRoute"),
    }
    crd = yaml.safe_load((CRD_DIR / "networking.istio.io_virtualservices.yaml").read_text())
    assert [(v["name"], v["served"], v["storage"]) for v in crd["spec"]["versions"]] == [
        ("v1", True, True),
        ("v1beta1", True, False),
        ("v1alpha3", True, False),
    ]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("info", custom_kinds(), ids=file_name)
def test_crd_passes_kubernetes_validate_strict(info: Any, version: str) -> None:
    crd = yaml.safe_load((CRD_DIR / file_name(info)).read_text())
    kubernetes_validate.validate(crd, version, strict=True)


def test_kubernetes_validate_strict_catches_a_bad_crd() -> None:
    """The check above is not vacuous: a misspelt CRD field is rejected."""
    crd = yaml.safe_load(render(custom_kinds()[0]))
    crd["spec"]["versions"][0]["servd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, KUBERNETES_VERSIONS[0], strict=True)
    # … and so is a misspelt keyword deep inside the generated openAPIV3Schema.
    crd = yaml.safe_load(render(custom_kinds()[0]))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["tpye"] = "object"
    with pytest.raises(kubernetes_validate.ValidationError, match="tpye"):
        kubernetes_validate.validate(crd, KUBERNETES_VERSIONS[0], strict=True)


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Reject unknown fields wherever an object lists its properties (server-side Strict validation)."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def crd_verdict(document: dict[str, Any]) -> bool:
    group, _ = split_api_version(document["apiVersion"])
    info = KINDS[(group, document["kind"])]
    schema = _strict(resource_schema(info))
    as_json = json.loads(json.dumps(document))  # what the API server sees: string map keys
    return bool(jsonschema.Draft7Validator(schema).is_valid(as_json))


def _custom_documents(text: str) -> list[str]:
    docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return [
        yaml.safe_dump(d) for d in docs if KINDS[(split_api_version(d["apiVersion"])[0], d["kind"])].is_custom
    ]


VALID = [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in _custom_documents(path.read_text())]
BY_ID = {case_id: document for case_id, document, _path, _words in CASES}


def test_the_example_sets_are_what_they_claim() -> None:
    assert len(VALID) >= 12
    assert set(BY_ID) >= SHAPE_CASES | RULE_CASES


@pytest.mark.parametrize("document", VALID)
def test_valid_examples_pass_both(document: str) -> None:
    assert load_text(document, "example.yaml").ok
    assert crd_verdict(yaml.safe_load(document))


@pytest.mark.parametrize("case_id", sorted(SHAPE_CASES))
def test_shape_errors_fail_both(case_id: str) -> None:
    document = BY_ID[case_id]
    assert not load_text(document, "case.yaml").ok
    assert not crd_verdict(yaml.safe_load(document))


@pytest.mark.parametrize("case_id", sorted(RULE_CASES))
def test_cross_field_rules_are_caught_by_schemas_only(case_id: str) -> None:
    document = BY_ID[case_id]
    assert not load_text(document, "case.yaml").ok
    assert crd_verdict(yaml.safe_load(document))
