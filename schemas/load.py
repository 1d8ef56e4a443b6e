"""Load multi-document YAML files into typed resources, reporting every problem with its location.

``LoadResult.resources`` holds the resources that passed every check, as plain typed objects;
``LoadResult.loaded`` pairs each with its :class:`Origin` (file and 1-based document number), and
``LoadResult.origin(resource)`` looks one up. A document with any error is left out of
``resources`` entirely — like the Kubernetes API server, the mesh never applies half a resource —
while warnings leave it in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from schemas import references
from schemas.common import namespace_of
from schemas.converter import structure
from schemas.errors import (
    Issue,
    MapKey,
    PathPart,
    Problem,
    ResourceInvalid,
    Severity,
    StructureFailure,
    format_path,
)
from schemas.kinds import Resource, UnknownKind, lookup
from schemas.networking import DestinationRule, VirtualService

YAML_SUFFIXES = (".yaml", ".yml")


@attrs.frozen(kw_only=True)
class Origin:
    source: str
    document_index: int  # 1-based, counting every ``---``-separated document in the file


@attrs.frozen(kw_only=True)
class Loaded:
    resource: Resource
    origin: Origin


@attrs.define(kw_only=True)
class LoadResult:
    loaded: list[Loaded] = attrs.Factory(list)
    errors: list[Issue] = attrs.Factory(list)
    warnings: list[Issue] = attrs.Factory(list)

    @property
    def resources(self) -> list[Resource]:
        return [item.resource for item in self.loaded]

    @property
    def ok(self) -> bool:
        return not self.errors

    def origin(self, resource: Resource) -> Origin:
        """Where ``resource`` (one of ``resources``, compared by identity) was read from."""
        for item in self.loaded:
            if item.resource is resource:
                return item.origin
        raise KeyError("resource was not loaded by this LoadResult")


@attrs.frozen(kw_only=True)
class _Position:
    line: int  # 1-based line where a mapping or sequence starts
    keys: dict[str, int]  # for a mapping: the line of each key
    items: list[int]  # for a sequence: the line of each item


@attrs.frozen(kw_only=True)
class _Document:
    """One YAML document on its way through the checks.

    ``positions`` maps ``id()`` of every dict/list in ``data`` to where it was written; the ids stay
    valid because ``data`` keeps the whole tree alive for as long as the document is.
    """

    origin: Origin
    data: Any
    prefix: tuple[PathPart, ...] = ()  # ("items", 3) inside a ``kind: List``
    positions: dict[int, _Position] = attrs.field(factory=dict, eq=False, repr=False)
    root: Any = attrs.field(default=attrs.Factory(lambda self: self.data, takes_self=True), repr=False)

    def line_of(self, path: tuple[PathPart, ...]) -> int | None:
        """The line of the deepest part of ``path`` that exists in the document (best effort)."""
        node = self.root
        position = self.positions.get(id(node))
        line = position.line if position else None
        for part in (*self.prefix, *path):
            key = part.key if isinstance(part, MapKey) else part
            if isinstance(node, dict) and key in node:
                if position is not None and str(key) in position.keys:
                    line = position.keys[str(key)]
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
                if position is not None and key < len(position.items):
                    line = position.items[key]
                node = node[key]
            else:
                break
            position = self.positions.get(id(node))
        return line


class _Loader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a doubled ``route:`` is a real mistake."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []
        self.positions: dict[int, _Position] = {}

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        data = super().construct_object(node, deep=deep)
        if isinstance(data, dict | list):
            keys: dict[str, int] = {}
            items: list[int] = []
            if isinstance(node, yaml.MappingNode):
                for key_node, _ in node.value:
                    if isinstance(key_node, yaml.ScalarNode):
                        keys.setdefault(key_node.value, key_node.start_mark.line + 1)
            elif isinstance(node, yaml.SequenceNode):
                items = [item.start_mark.line + 1 for item in node.value]
            self.positions[id(data)] = _Position(line=node.start_mark.line + 1, keys=keys, items=items)
        return data

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    self.duplicates.append(
                        f'duplicate key "{key_node.value}" at line {key_node.start_mark.line + 1}'
                    )
                seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def _issue(doc: _Document | None, source: str, problem: Problem) -> Issue:
    data = doc.data if doc is not None and isinstance(doc.data, Mapping) else {}
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    kind = text(data.get("kind"))
    return Issue(
        source=source,
        document_index=doc.origin.document_index if doc is not None else None,
        kind=kind,
        namespace=text(metadata.get("namespace")),
        name=text(metadata.get("name")) if kind is not None else None,
        path=format_path((*(doc.prefix if doc else ()), *problem.path)),
        line=doc.line_of(problem.path) if doc is not None else None,
        message=problem.message,
        severity=problem.severity,
    )


def _documents(text: str, source: str, result: LoadResult) -> Iterator[_Document]:
    loader = _Loader(text)
    index = 0
    try:
        while True:
            index += 1  # the document being read now, so a syntax error is charged to the right one
            if not loader.check_data():  # type: ignore[no-untyped-call]
                break
            data = loader.get_data()
            origin = Origin(source=source, document_index=index)
            positions, loader.positions = loader.positions, {}
            doc = _Document(origin=origin, data=data, positions=positions)
            for duplicate in loader.duplicates:
                result.errors.append(_issue(doc, source, Problem(path=(), message=duplicate)))
            loader.duplicates.clear()
            if data is None:
                continue  # an empty document, e.g. a trailing ``---``
            if (
                isinstance(data, Mapping)
                and data.get("kind") == "List"
                and isinstance(data.get("items"), list)
            ):
                for i, item in enumerate(data["items"]):
                    yield _Document(
                        origin=origin, data=item, prefix=("items", i), positions=positions, root=data
                    )
            else:
                yield doc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        origin = Origin(source=source, document_index=index)
        message = f"YAML syntax error{where}: {problem}"
        result.errors.append(
            _issue(_Document(origin=origin, data=None), source, Problem(path=(), message=message))
        )
    finally:
        loader.dispose()


def _structure(doc: _Document) -> tuple[Resource | None, list[Problem]]:
    data = doc.data
    if not isinstance(data, Mapping):
        return None, [
            Problem(path=(), message=f"expected a Kubernetes object (a mapping), got {type(data).__name__}")
        ]
    missing = [k for k in ("apiVersion", "kind") if not isinstance(data.get(k), str)]
    if missing:
        return None, [Problem(path=(k,), message="required field missing (a string)") for k in missing]
    try:
        info = lookup(data["apiVersion"], data["kind"])
    except UnknownKind as exc:
        return None, [exc.problem]
    try:
        resource: Resource = structure(data, info.cls)
    except StructureFailure as failure:
        return None, failure.problems
    return resource, info.check(resource)


def _key(resource: Resource) -> tuple[str, str, str]:
    return resource.kind, namespace_of(resource.metadata), resource.metadata.name


def _finish(candidates: list[tuple[_Document, Resource]], result: LoadResult) -> LoadResult:
    """Cross-document checks over everything that passed its own checks."""
    duplicates = references.duplicate_problems([_key(r) for _, r in candidates])
    rules = [r for _, r in candidates if isinstance(r, DestinationRule)]
    for i, (doc, resource) in enumerate(candidates):
        if i in duplicates:
            result.errors.append(_issue(doc, doc.origin.source, duplicates[i]))
            continue
        if isinstance(resource, VirtualService):
            for problem in references.undefined_subset_problems(resource, rules):
                result.warnings.append(_issue(doc, doc.origin.source, problem))
        result.loaded.append(Loaded(resource=resource, origin=doc.origin))
    return result


def _load_into(
    text: str, source: str, result: LoadResult, candidates: list[tuple[_Document, Resource]]
) -> None:
    for doc in _documents(text, source, result):
        resource, problems = _structure(doc)
        for problem in problems:
            issues = result.errors if problem.severity is Severity.ERROR else result.warnings
            issues.append(_issue(doc, source, problem))
        if resource is not None and not any(p.severity is Severity.ERROR for p in problems):
            candidates.append((doc, resource))


def load_text(text: str, source: str) -> LoadResult:
    """Load every document of ``text``; ``source`` names it in messages (usually the file name)."""
    result = LoadResult()
    candidates: list[tuple[_Document, Resource]] = []
    _load_into(text, source, result, candidates)
    return _finish(candidates, result)


def yaml_files(path: Path) -> list[Path]:
    """``path`` itself, or every ``*.yaml``/``*.yml`` below it in a stable (sorted) order."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path]


def load_paths(paths: Sequence[Path | str]) -> LoadResult:
    """Load files and directories as one set, so cross-file checks (subsets, duplicates) see everything."""
    result = LoadResult()
    candidates: list[tuple[_Document, Resource]] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if not path.exists():
            result.errors.append(
                _issue(None, str(path), Problem(path=(), message="no such file or directory"))
            )
            continue
        files = yaml_files(path)
        if not files:
            message = "no *.yaml or *.yml files in this directory"
            result.errors.append(_issue(None, str(path), Problem(path=(), message=message)))
        for file in files:
            if file.resolve() in seen:
                continue  # named twice (a file and its directory): one definition, not a duplicate
            seen.add(file.resolve())
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                result.errors.append(_issue(None, str(file), Problem(path=(), message=f"cannot read: {exc}")))
                continue
            _load_into(text, str(file), result, candidates)
    return _finish(candidates, result)


def parse_resource(data: Mapping[str, Any], source: str = "<input>") -> Resource:
    """One already-parsed object (e.g. from the admin API's JSON) → a resource, or :class:`ResourceInvalid`.

    Cross-resource warnings are not computed here: they need the whole set (use ``load_*``).
    """
    doc = _Document(origin=Origin(source=source, document_index=1), data=data)
    resource, problems = _structure(doc)
    errors = [_issue(doc, source, p) for p in problems if p.severity is Severity.ERROR]
    if resource is None or errors:
        raise ResourceInvalid(errors)
    return resource
