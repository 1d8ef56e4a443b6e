"""The embedded default store: a directory of YAML files, re-read when a file's signature changes.

Polling (mtime, size, inode) with ``trio.sleep`` instead of inotify keeps this portable and thread-free;
a config directory holds a handful of files, so a scan costs microseconds. File timestamps are coarse (a
kernel tick), so two same-size writes within one tick look identical; as git does with "racy" index
entries, a file whose mtime is not safely older than the previous scan is re-read on the next one and
its text compared. A file is accepted or
rejected as a whole: if it fails to parse or validate, its errors are reported in ``errors`` and the
resources it defined before stay in force — an editor's half-saved file must never delete a route from
every proxy. Deleting a file removes its resources. A resource defined in two files is kept from the
first file in path order and reported against the second.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
import trio

from istiod_lite.stores.base import ResourceKey, Revision, StoredResource
from istiod_lite.stores.manifests import Parser, default_parser

SUFFIXES = (".yaml", ".yml", ".json")
RACY_MARGIN_NS = 100_000_000
"""File mtimes come from a coarse clock that can lag the wall clock; treat this much as 'same time'."""


@attrs.frozen
class _Signature:
    mtime_ns: int
    size: int
    inode: int


class DirectoryStore:
    """Resources from every ``*.yaml``/``*.yml``/``*.json`` file under ``directory`` (recursively)."""

    def __init__(
        self,
        directory: Path,
        *,
        parser: Parser | None = None,
        poll_interval: float = 0.5,
        wall_clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.directory = directory
        self._wall_clock_ns = wall_clock_ns
        self._racy_since_ns = 0
        self._digests: dict[Path, str] = {}
        self.poll_interval = poll_interval
        self._parser = parser if parser is not None else default_parser()
        self._signatures: dict[Path, _Signature] = {}
        self._by_file: dict[Path, tuple[StoredResource, ...]] = {}
        self._file_errors: dict[Path, tuple[str, ...]] = {}
        self._file_warnings: dict[Path, tuple[str, ...]] = {}
        self._merged: dict[ResourceKey, StoredResource] = {}
        self._errors: dict[str, tuple[str, ...]] = {}
        self._revision = Revision()

    # ---------------------------------------------------------------------------------- Store

    @property
    def revision(self) -> int:
        return self._revision.value

    def list(self) -> Mapping[ResourceKey, StoredResource]:
        return dict(self._merged)

    @property
    def errors(self) -> Mapping[str, tuple[str, ...]]:
        return dict(self._errors)

    @property
    def warnings(self) -> Mapping[str, tuple[str, ...]]:
        return {str(path): warnings for path, warnings in self._file_warnings.items() if warnings}

    async def wait_changed(self, since: int) -> int:
        return await self._revision.wait_changed(since)

    # ---------------------------------------------------------------------------------- scanning

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Scan now (readiness = the first state is loaded), then re-scan every ``poll_interval``."""
        self.scan()
        task_status.started()
        while True:
            await trio.sleep(self.poll_interval)
            self.scan()

    def scan(self) -> bool:
        """Re-read changed files; returns whether the resources in force changed."""
        started_ns = self._wall_clock_ns()
        directory_error = None
        try:
            current = self._signatures_now()
        except OSError as exc:  # directory gone or unreadable: keep everything, say why
            directory_error = f"cannot read config directory: {exc.strerror or exc}"
            current = dict(self._signatures)
        for path in set(self._signatures) - set(current):
            self._forget(path)
        for path, signature in current.items():
            racy = signature.mtime_ns >= self._racy_since_ns - RACY_MARGIN_NS
            if self._signatures.get(path) != signature or racy:
                self._signatures[path] = signature
                self._load(path)
        self._racy_since_ns = started_ns
        return self._merge(directory_error)

    def _signatures_now(self) -> dict[Path, _Signature]:
        if not self.directory.is_dir():
            raise FileNotFoundError(2, "no such directory", str(self.directory))
        found: dict[Path, _Signature] = {}
        for root, dirs, files in os.walk(self.directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in files:
                if name.startswith(".") or not name.endswith(SUFFIXES):
                    continue  # editor swap and backup files, dotfiles
                path = Path(root) / name
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue  # removed between listing and stat; the next scan settles it
                found[path] = _Signature(stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return found

    def _forget(self, path: Path) -> None:
        for table in (self._signatures, self._digests, self._by_file, self._file_errors, self._file_warnings):
            table.pop(path, None)

    def _load(self, path: Path) -> None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._file_errors[path] = (f"{path}: cannot read: {exc}",)
            self._digests.pop(path, None)
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if self._digests.get(path) == digest:
            return  # a racy re-read of unchanged text: nothing to parse
        self._digests[path] = digest
        result = self._parser(text, str(path))
        self._file_warnings[path] = result.warnings
        if not result.ok:
            self._file_errors[path] = result.errors  # previous content of this file stays in force
            return
        self._file_errors.pop(path, None)
        self._by_file[path] = result.resources

    def _merge(self, directory_error: str | None) -> bool:
        merged: dict[ResourceKey, StoredResource] = {}
        errors: dict[str, list[str]] = {str(path): list(errs) for path, errs in self._file_errors.items()}
        for path in sorted(self._by_file):
            for resource in self._by_file[path]:
                first = merged.get(resource.key)
                if first is not None:
                    errors.setdefault(str(path), []).append(
                        f"{resource.source}: {resource.key} is already defined at {first.source}; "
                        "ignored here"
                    )
                    continue
                merged[resource.key] = resource
        if directory_error is not None:
            errors[str(self.directory)] = [directory_error]
        self._errors = {source: tuple(errs) for source, errs in errors.items()}
        if merged == self._merged:
            return False
        self._merged = merged
        self._revision.bump()
        return True
