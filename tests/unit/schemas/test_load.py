"""The loader: documents, files and directories, YAML-level mistakes and cross-document checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ResourceInvalid
from schemas.load import load_paths, load_text, parse_resource
from schemas.networking import DestinationRule, VirtualService
from schemas.security import Action, AuthorizationPolicy

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
          weight: 90
        - destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}
          weight: 10
"""
DR = """\
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
"""


def test_document_numbers_count_every_document_from_one() -> None:
    text = "---\n" + DR + "---\n---\n" + VS.replace("weight: 10", "weight: ten")
    result = load_text(text, "mixed.yaml")
    assert [(e.document_index, e.path) for e in result.errors] == [(3, "spec.http[0].route[1].weight")]
    assert [type(r) for r in result.resources] == [DestinationRule]
    assert result.origin(result.resources[0]).document_index == 1


def test_subsets_defined_in_another_file_silence_the_warning(tmp_path: Path) -> None:
    (tmp_path / "vs.yaml").write_text(VS)
    assert len(load_paths([tmp_path / "vs.yaml"]).warnings) == 2
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "dr.yml").write_text(DR)
    (tmp_path / "notes.txt").write_text("not yaml: [")
    result = load_paths([tmp_path])
    assert result.ok and result.warnings == []
    assert {type(r) for r in result.resources} == {VirtualService, DestinationRule}


def test_subset_in_other_namespace_does_not_count() -> None:
    result = load_text(VS + "---\n" + DR.replace("host: reviews.bookinfo", "host: reviews"), "x.yaml")
    assert result.warnings == []
    other = DR.replace("namespace: bookinfo", "namespace: other").replace(
        "host: reviews.bookinfo", "host: reviews"
    )
    result = load_text(VS + "---\n" + other, "x.yaml")
    assert [w.path for w in result.warnings] == [
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].route[1].destination.subset",
    ]
    assert result.ok  # warnings never make the set invalid


def test_yaml_syntax_error_names_document_and_line() -> None:
    result = load_text(DR + "---\nkind: [unclosed\n", "broken.yaml")
    assert len(result.resources) == 1
    (error,) = result.errors
    assert error.document_index == 2
    assert "YAML syntax error at line" in error.message


def test_duplicate_yaml_keys_are_errors() -> None:
    text = DR.replace("  host: reviews.bookinfo\n", "  host: reviews.bookinfo\n  host: ratings\n")
    (error,) = load_text(text, "dup.yaml").errors
    assert 'duplicate key "host" at line 6' in error.message


def test_same_resource_twice_is_an_error() -> None:
    result = load_text(DR + "---\n" + DR, "twice.yaml")
    (error,) = result.errors
    assert (error.document_index, error.path) == (2, "metadata.name")
    assert "defined more than once" in error.message
    assert len(result.resources) == 1


def test_kubectl_output_loads() -> None:
    text = """\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: ServiceAccount
    metadata:
      name: reviews
      namespace: bookinfo
      uid: 0b5f1c1e-0000-0000-0000-000000000000
      resourceVersion: "1234"
      creationTimestamp: "2024-01-01T00:00:00Z"
  - apiVersion: v1
    kind: Namespace
    metadata: {name: bookinfo}
    spec: {finalizers: [kubernetes]}
    status: {phase: Active}
  - apiVersion: v1
    kind: Namespace
    metadata: {name: 7}
"""
    result = load_text(text, "list.yaml")
    assert [r.kind for r in result.resources] == ["ServiceAccount", "Namespace"]
    assert [(e.document_index, e.path) for e in result.errors] == [(1, "items[2].metadata.name")]


@pytest.mark.parametrize(
    ("text", "path", "words"),
    [
        ("- a\n- b\n", "", "expected a Kubernetes object"),
        ("kind: Service\nmetadata: {name: a}\n", "apiVersion", "required field missing"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n", "kind", 'unknown kind "Pod"'),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: a}\n", "apiVersion", "served as apps/v1"),
        ("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: null}\n", "metadata.name", "required field is null"),
    ],
)
def test_documents_that_are_not_resources(text: str, path: str, words: str) -> None:
    (error,) = load_text(text, "odd.yaml").errors
    assert error.path == path and words in error.message


def test_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    result = load_paths([tmp_path / "absent.yaml", tmp_path])
    assert [e.message for e in result.errors] == [
        "no such file or directory",
        "no *.yaml or *.yml files in this directory",
    ]


def test_parse_resource_raises_with_every_issue() -> None:
    data = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p"},
        "spec": {"action": "AUDIT", "rules": [{"to": [{"operation": {"methods": "GET"}}]}]},
    }
    with pytest.raises(ResourceInvalid) as caught:
        parse_resource(data, source="api")
    assert [i.path for i in caught.value.issues] == ["spec.action", "spec.rules[0].to[0].operation.methods"]
    assert "meshctl validate" in str(caught.value)
    data["spec"] = {"action": "DENY"}
    policy = parse_resource(data)
    assert isinstance(policy, AuthorizationPolicy)
    assert policy.spec.action is Action.DENY


def test_issues_carry_the_line_of_the_field_for_editors() -> None:
    text = (
        DR + "---\n" + VS.replace("weight: 10", "weight: ten").replace("metadata: {", "metadata: {uid: x, ")
    )
    text += "---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Namespace\n"
    text += "    metadata:\n      name: Bookinfo\n"
    lines = text.splitlines()
    result = load_text(text, "lines.yaml")
    assert [(e.path, e.line) for e in result.errors] == [
        ("spec.http[0].route[1].weight", lines.index("          weight: ten") + 1),
        ("items[0].metadata.name", lines.index("      name: Bookinfo") + 1),
    ]
    # The printed form stays exactly as users read it; the line is for editors and UIs.
    assert str(result.errors[0]) == (
        "lines.yaml: document 2 (VirtualService bookinfo/reviews): spec.http[0].route[1].weight: "
        'expected integer, got "ten"'
    )
