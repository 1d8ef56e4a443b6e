"""Resources applied through the admin API (``meshctl apply/delete``), persisted in the state directory.

Every apply is validated as a whole before anything changes, then written to disk (atomically: temp
file, fsync, rename) *before* it takes effect, so what proxies were pushed always survives a restart of
istiod_lite. A state file that no longer validates stops the start with an error naming it instead of
silently dropping the user's resources.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from istiod_lite.stores.base import ResourceKey, Revision, StoredResource, StoreError
from istiod_lite.stores.manifests import Parser, default_parser, key_of, parse_manifests, with_namespace

SOURCE = "applied"
_FORMAT = {"apiVersion": "istiod-lite.mesh/v1", "kind": "AppliedResources"}


class CorruptStateFile(StoreError):
    hint = "the state file {path} no longer validates; fix or move it aside (it holds every applied resource)"


@attrs.frozen
class ApplyReport:
    """kubectl's words per resource: created, configured (changed) or unchanged."""

    created: tuple[ResourceKey, ...] = ()
    configured: tuple[ResourceKey, ...] = ()
    unchanged: tuple[ResourceKey, ...] = ()


@attrs.frozen
class DeleteReport:
    deleted: tuple[ResourceKey, ...] = ()
    not_found: tuple[ResourceKey, ...] = ()


class AppliedStore:
    """A :class:`~istiod_lite.stores.base.Store` fed by apply/delete and kept in ``path``."""

    def __init__(self, path: Path, *, parser: Parser | None = None) -> None:
        self.path = path
        self._parser = parser if parser is not None else default_parser()
        self._resources: dict[ResourceKey, StoredResource] = {}
        self._revision = Revision()
        self._load()

    # ---------------------------------------------------------------------------------- Store

    @property
    def revision(self) -> int:
        return self._revision.value

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        return dict(self._resources)

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return {}  # nothing invalid is ever accepted here: apply() rejects instead

    async def wait_changed(self, since: int) -> int:
        return await self._revision.wait_changed(since)

    # ---------------------------------------------------------------------------------- changes

    def apply_text(self, text: str, *, namespace: str | None = None, source: str = "apply") -> ApplyReport:
        """Apply every document of a YAML text (``meshctl apply -f``)."""
        return self.apply(_documents(text, source), namespace=namespace, source=source)

    def apply(
        self, manifests: Sequence[Mapping[str, Any]], *, namespace: str | None = None, source: str = "apply"
    ) -> ApplyReport:
        """Create or replace ``manifests`` (``namespace`` fills in resources that name none)."""
        documents = [with_namespace(m, namespace) if namespace else dict(m) for m in manifests]
        parsed = self._validate(documents, source)
        created, configured, unchanged = [], [], []
        table = dict(self._resources)
        for resource in parsed:
            old = table.get(resource.key)
            if old is None:
                created.append(resource.key)
            elif old.manifest != resource.manifest:
                configured.append(resource.key)
            else:
                unchanged.append(resource.key)
                continue
            table[resource.key] = resource
        if created or configured:
            self._commit(table)
        return ApplyReport(tuple(created), tuple(configured), tuple(unchanged))

    def delete(self, keys: Iterable[ResourceKey]) -> DeleteReport:
        table = dict(self._resources)
        deleted, missing = [], []
        for key in keys:
            if table.pop(key, None) is None:
                missing.append(key)
            else:
                deleted.append(key)
        if deleted:
            self._commit(table)
        return DeleteReport(tuple(deleted), tuple(missing))

    def delete_text(self, text: str, *, namespace: str | None = None, source: str = "delete") -> DeleteReport:
        """Delete what the documents of a YAML text name (``meshctl delete -f``); bodies are not validated."""
        documents = [with_namespace(d, namespace) if namespace else d for d in _documents(text, source)]
        parsed = parse_manifests("\n---\n".join(json.dumps(d) for d in documents), source)
        if not parsed.ok:
            raise StoreError("cannot tell what to delete: " + "; ".join(parsed.errors))
        return self.delete(key_of(r.manifest) for r in parsed.resources)

    # ---------------------------------------------------------------------------------- internals

    def _validate(self, documents: Sequence[Mapping[str, Any]], source: str) -> tuple[StoredResource, ...]:
        result = self._parser("\n---\n".join(json.dumps(d) for d in documents), source)
        if not result.ok:
            raise StoreError(f"{len(result.errors)} problem(s), nothing applied: " + "; ".join(result.errors))
        return tuple(attrs.evolve(resource, source=SOURCE) for resource in result.resources)

    def _commit(self, table: dict[ResourceKey, StoredResource]) -> None:
        items = [table[key].manifest for key in sorted(table)]
        _write_atomically(self.path, json.dumps({**_FORMAT, "items": items}, indent=1, sort_keys=True))
        self._resources = table
        self._revision.bump()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise CorruptStateFile(f"cannot read applied resources: {exc}", path=self.path) from None
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise CorruptStateFile("applied resources file has no 'items' list", path=self.path)
        try:
            resources = self._validate(items, str(self.path))
        except StoreError as exc:
            raise CorruptStateFile(exc.message, path=self.path) from None
        self._resources = {resource.key: resource for resource in resources}
        if self._resources:
            self._revision.bump()


def _documents(text: str, source: str) -> Sequence[dict[str, Any]]:
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise StoreError(f"{source}: not valid YAML: {exc}") from None
    bad = [i + 1 for i, d in enumerate(documents) if not isinstance(d, dict)]
    if bad:
        raise StoreError(f"{source}: documents {bad} are not mappings (Kubernetes objects)")
    return documents


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
