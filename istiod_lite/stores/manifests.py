"""Turning YAML text into stored resources: the parser seam and the fallback parser behind it.

Stores take a :data:`Parser` so the validation that decides what is "in force" is the schemas package's
(``schemas.load``, adapted in :mod:`istiod_lite.stores.schemas_parser`; :func:`default_parser`).
:func:`parse_manifests` only checks the Kubernetes envelope (apiVersion, kind, metadata.name): it is
for resources the schemas package does not model and keeps the store logic testable on its own. Either
way a text is accepted or rejected as a whole: a file with one bad document keeps the file's previous
content in force.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import yaml

from istiod_lite.stores.base import CLUSTER_SCOPED_KINDS, ResourceKey, StoredResource

DEFAULT_NAMESPACE = "default"


@attrs.frozen
class ParseResult:
    resources: tuple[StoredResource, ...] = ()
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


Parser = Callable[[str, str], ParseResult]
"""``parser(text, source) -> ParseResult``: every YAML document in ``text``, validated."""


def parse_manifests(text: str, source: str) -> ParseResult:
    """The fallback parser: multi-document YAML, each document a Kubernetes object envelope."""
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        return ParseResult(errors=(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}",))
    resources: list[StoredResource] = []
    errors: list[str] = []
    for index, document in enumerate(documents):
        where = f"{source}#{index + 1}"
        problem = _envelope_problem(document)
        if problem:
            errors.append(f"{where}: {problem}")
            continue
        key = key_of(document)
        resources.append(StoredResource(key=key, manifest=document, source=where, obj=document))
    errors += _duplicates(resources)
    return ParseResult(resources=tuple(resources) if not errors else (), errors=tuple(errors))


def _envelope_problem(document: Any) -> str | None:
    if not isinstance(document, Mapping):
        return f"a document must be a mapping (a Kubernetes object), got {type(document).__name__}"
    for field in ("apiVersion", "kind"):
        if not isinstance(document.get(field), str) or not document[field]:
            return f"missing or empty {field!r}"
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str) or not metadata["name"]:
        return "missing metadata.name"
    namespace = metadata.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        return "metadata.namespace must be a non-empty string"
    return None


def key_of(document: Mapping[str, Any]) -> ResourceKey:
    """The store key of a valid envelope; namespaced kinds without a namespace land in ``default``."""
    kind = str(document["kind"])
    metadata = document["metadata"]
    namespace = "" if kind in CLUSTER_SCOPED_KINDS else str(metadata.get("namespace") or DEFAULT_NAMESPACE)
    return ResourceKey(kind=kind, namespace=namespace, name=str(metadata["name"]))


def with_namespace(document: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """``document`` with ``metadata.namespace`` set if it names none (kubectl's ``-n`` rule)."""
    result = dict(document)
    metadata = result.get("metadata")
    if isinstance(metadata, Mapping) and not metadata.get("namespace") and result.get("kind") not in (
        CLUSTER_SCOPED_KINDS
    ):
        result["metadata"] = {**metadata, "namespace": namespace}
    return result


def _duplicates(resources: Sequence[StoredResource]) -> list[str]:
    seen: dict[ResourceKey, str] = {}
    errors = []
    for resource in resources:
        if resource.key in seen:
            errors.append(f"{resource.source}: {resource.key} is already defined at {seen[resource.key]}")
        else:
            seen[resource.key] = resource.source
    return errors


def default_parser() -> Parser:
    """The parser stores use unless told otherwise: full validation by the schemas package."""
    from istiod_lite.stores.schemas_parser import parse_with_schemas  # imports schemas; keep it lazy

    return parse_with_schemas
