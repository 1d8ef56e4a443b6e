"""The real parser behind the stores: ``schemas.load`` validation, adapted to the store's seam.

Each loaded resource keeps its typed object (``obj``, what translation reads) and its normalised
manifest (``schemas.converter.unstructure``: what ``meshctl get -o yaml`` shows and what the applied
store persists). Errors and warnings keep the schemas package's ``file: document N (Kind ns/name):
field: message`` form, which is what a user needs to find the line.
"""

from __future__ import annotations

from istiod_lite.stores.base import ResourceKey, StoredResource
from istiod_lite.stores.manifests import DEFAULT_NAMESPACE, ParseResult
from schemas.converter import unstructure
from schemas.kinds import UnknownKind, lookup
from schemas.load import load_text


def parse_with_schemas(text: str, source: str) -> ParseResult:
    """``Parser`` over :func:`schemas.load.load_text`; the text is all-or-nothing, as stores require."""
    result = load_text(text, source)
    errors = tuple(str(issue) for issue in result.errors)
    warnings = tuple(str(issue) for issue in result.warnings)
    if errors:
        return ParseResult(errors=errors, warnings=warnings)
    resources = []
    for loaded in result.loaded:
        manifest = unstructure(loaded.resource)
        resources.append(
            StoredResource(
                key=_key(manifest),
                manifest=manifest,
                source=f"{loaded.origin.source}#{loaded.origin.document_index}",
                obj=loaded.resource,
            )
        )
    return ParseResult(resources=tuple(resources), warnings=warnings)


def _key(manifest: dict[str, object]) -> ResourceKey:
    kind, api_version = str(manifest["kind"]), str(manifest["apiVersion"])
    metadata = manifest["metadata"]
    assert isinstance(metadata, dict)  # unstructure of a loaded resource always has metadata
    try:
        namespaced = lookup(api_version, kind).namespaced
    except UnknownKind:  # pragma: no cover - load_text only returns known kinds
        namespaced = True
    namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE) if namespaced else ""
    return ResourceKey(kind=kind, namespace=namespace, name=str(metadata["name"]))
