"""The fallback parser: Kubernetes envelopes, whole-text acceptance, kubectl's namespace rules."""

from __future__ import annotations

import pytest

from istiod_lite.stores.base import ResourceKey
from istiod_lite.stores.manifests import parse_manifests, with_namespace

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: search, namespace: prod}\n"


def test_every_document_becomes_a_resource_keyed_by_kind_namespace_and_name() -> None:
    text = SERVICE + "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n"
    result = parse_manifests(text, "app.yaml")
    assert result.ok
    assert [r.key for r in result.resources] == [
        ResourceKey("Service", "prod", "search"),
        ResourceKey("Namespace", "", "prod"),
    ]
    assert [r.source for r in result.resources] == ["app.yaml#1", "app.yaml#2"]


def test_a_namespaced_resource_without_namespace_lands_in_default_as_with_kubectl() -> None:
    result = parse_manifests("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: client}\n", "sa.yaml")
    assert [r.key for r in result.resources] == [ResourceKey("ServiceAccount", "default", "client")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Service\nmetadata: {name: a}\n", "app.yaml#1: missing or empty 'apiVersion'"),
        ("apiVersion: v1\nmetadata: {name: a}\n", "app.yaml#1: missing or empty 'kind'"),
        ("apiVersion: v1\nkind: Service\nmetadata: {}\n", "app.yaml#1: missing metadata.name"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: 3}\n", "metadata.namespace must be"),
        ("- just\n- a list\n", "a document must be a mapping"),
        ("apiVersion: v1\nkind: [unclosed\n", "app.yaml:3: not valid YAML"),
        (SERVICE + "---\n" + SERVICE, "app.yaml#2: Service/prod/search is already defined at app.yaml#1"),
    ],
)
def test_a_bad_document_rejects_the_whole_text_with_an_error_naming_it(text: str, expected: str) -> None:
    result = parse_manifests(text, "app.yaml")
    assert not result.ok and result.resources == ()
    assert any(expected in error for error in result.errors), result.errors


def test_with_namespace_fills_in_only_where_none_is_named_and_never_for_cluster_scoped_kinds() -> None:
    named = {"kind": "Service", "metadata": {"name": "a", "namespace": "prod"}}
    unnamed = {"kind": "Service", "metadata": {"name": "a"}}
    namespace = {"kind": "Namespace", "metadata": {"name": "prod"}}
    assert with_namespace(named, "dev")["metadata"]["namespace"] == "prod"
    assert with_namespace(unnamed, "dev")["metadata"]["namespace"] == "dev"
    assert "namespace" not in with_namespace(namespace, "dev")["metadata"]
    assert "namespace" not in unnamed["metadata"]  # the input is not modified
