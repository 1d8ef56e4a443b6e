"""The one interface every config store offers: a keyed listing plus "something changed" notifications.

Consumers never get per-resource events: they remember a revision, wait for a newer one and re-read
``list()``. A burst of changes therefore collapses into one re-read by construction, which is what the
translation and push pipeline want (they rebuild from the whole state and debounce anyway). A
Kubernetes store later fits the same seam.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import trio

from meshcore.errors import MeshError

CLUSTER_SCOPED_KINDS = frozenset({"Namespace", "GatewayClass", "CustomResourceDefinition", "ClusterRole"})


@attrs.frozen(order=True)
class ResourceKey:
    """A resource's Kubernetes identity: ``kind`` and ``namespace/name`` (namespace "" if cluster-scoped)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"


@attrs.frozen
class StoredResource:
    """One resource as a store holds it.

    ``manifest`` is the document as written (what ``meshctl get -o yaml`` shows and what the applied store
    persists); ``obj`` is whatever the parser made of it (the typed schemas object once that parser is
    wired; the manifest itself with the fallback parser); ``source`` says where it came from
    (``path/to/file.yaml#2`` or ``applied``).
    """

    key: ResourceKey
    manifest: Mapping[str, Any]
    source: str
    obj: Any = None


class StoreError(MeshError):
    """Resources given to a store were rejected; nothing was changed."""

    hint = "fix the listed documents and apply again; the store keeps its previous content"


class Store(Protocol):
    @property
    def revision(self) -> int:
        """Increases whenever ``list()`` would return something different."""

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        """Every resource in force now."""

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        """Problems per source (file path, ``applied``) whose content is therefore not (all) in force."""

    async def wait_changed(self, since: int) -> int:
        """Return the current revision once it differs from ``since`` (immediately if it already does)."""


class Revision:
    """A revision counter with waiters: the change-notification half of :class:`Store`, shared by all."""

    def __init__(self) -> None:
        self.value = 0
        self._event = trio.Event()

    def bump(self) -> None:
        self.value += 1
        self._event.set()
        self._event = trio.Event()

    async def wait_changed(self, since: int) -> int:
        while self.value == since:
            await self._event.wait()
        return self.value
