"""What validation reports: a field-level :class:`Problem` and a user-facing :class:`Issue`.

The converter and the rule checks only know field paths inside one document (``Problem``); the
loader adds where the document came from (``Issue``), so a user reads::

    canary.yaml: document 2 (VirtualService prod/search-service): spec.http[0].route[1].weight:
    expected integer, got "5%"

Document numbers count from 1, the way a person counts the ``---``-separated documents of a file.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from meshcore.errors import MeshError


@attrs.frozen
class MapKey:
    """A path component that is a key of a user map rather than a schema field."""

    key: str | int


PathPart = str | int | MapKey


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"


def format_path(path: Sequence[PathPart]) -> str:
    """``("spec", "http", 0, "headers", MapKey("end-user"))`` → ``spec.http[0].headers["end-user"]``.

    Field names are joined with dots and list indexes go in brackets. A string that follows a field
    whose value is a map (labels, headers, port maps) is written ``["key"]`` because such keys may
    hold dots and dashes; the converter marks those with :class:`MapKey`.
    """
    out = ""
    for part in path:
        if isinstance(part, MapKey):
            out += f"[{json.dumps(part.key)}]"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@attrs.frozen(kw_only=True)
class Problem:
    """One thing wrong (or suspicious) at ``path`` inside a single document."""

    path: tuple[PathPart, ...]
    message: str
    severity: Severity = Severity.ERROR

    def under(self, *prefix: PathPart) -> Problem:
        return attrs.evolve(self, path=(*prefix, *self.path))


class StructureFailure(MeshError):
    """Raised by the converter with every problem found below the value being structured.

    It knows field paths but not files: the loader turns each problem into an :class:`Issue`.
    """

    hint = "the field paths are relative to the object passed to schemas.converter.structure"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{format_path(p.path) or '<root>'}: {p.message}" for p in self.problems))


@attrs.frozen(kw_only=True)
class Issue:
    """A problem located in the user's files."""

    source: str
    document_index: int | None  # 1-based; None for problems that belong to no single document
    kind: str | None
    namespace: str | None
    name: str | None
    path: str
    message: str
    severity: Severity = Severity.ERROR
    # Best-effort 1-based line of the field (or of its nearest existing parent) for editors and
    # UIs; not part of the printed form, which stays file/document/resource/path as users read it.
    line: int | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        where = self.source
        if self.document_index is not None:
            where += f": document {self.document_index}"
        if self.kind is not None:
            who = f"{self.namespace}/{self.name}" if self.namespace else self.name
            where += f" ({self.kind} {who})" if who else f" ({self.kind})"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ResourceInvalid(MeshError):
    """Raised by the single-resource helpers; ``issues`` holds every error found."""

    hint = "fix the fields named above; `meshctl validate -f FILE` lists every problem at once"

    def __init__(self, issues: Sequence[Issue]) -> None:
        super().__init__("\n".join(str(i) for i in issues), issues=issues)
        self.issues = list(issues)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean "weight"?)`` when ``word`` is close to a candidate, else an empty string."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f' (did you mean "{close[0]}"?)' if close else ""


def describe(value: Any) -> str:
    """How a wrong value is shown back to the user: JSON for scalars, the type for containers."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, bool | int | float | str) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return type(value).__name__
