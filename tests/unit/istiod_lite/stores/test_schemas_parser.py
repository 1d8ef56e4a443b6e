"""The stores' default parser is schemas.load: typed objects, normalised manifests, Kubernetes scopes."""

from __future__ import annotations

from istiod_lite.stores.base import ResourceKey
from istiod_lite.stores.manifests import default_parser
from istiod_lite.stores.schemas_parser import parse_with_schemas
from schemas.core import Namespace, Service

TEXT = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: search}
spec: {selector: {app: search}, ports: [{port: 80, targetPort: 8080}]}
"""


def test_resources_carry_their_typed_object_and_a_normalised_manifest() -> None:
    result = parse_with_schemas(TEXT, "app.yaml")
    assert result.ok
    namespace, service = result.resources
    assert namespace.key == ResourceKey("Namespace", "", "prod")  # cluster-scoped: no namespace
    assert service.key == ResourceKey("Service", "default", "search")  # kubectl's default namespace
    assert isinstance(namespace.obj, Namespace) and isinstance(service.obj, Service)
    assert service.manifest["spec"]["ports"] == [{"port": 80, "targetPort": 8080}]
    assert [r.source for r in result.resources] == ["app.yaml#1", "app.yaml#2"]


def test_one_invalid_document_rejects_the_text_with_the_schemas_error() -> None:
    bad = TEXT + (
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: cart}\n"
        "spec: {ports: [{port: 99999}]}\n"
    )
    result = parse_with_schemas(bad, "app.yaml")
    assert result.resources == ()
    assert result.errors == (
        "app.yaml: document 3 (Service cart): spec.ports[0].port: must be at most 65535, got 99999",
    )


def test_stores_validate_with_schemas_by_default() -> None:
    assert default_parser() is parse_with_schemas
