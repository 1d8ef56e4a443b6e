"""DirectoryStore: reload on change, invalid files reported while their previous content stays."""

from __future__ import annotations

import os
from pathlib import Path

import trio
import trio.testing

from istiod_lite.stores.base import ResourceKey
from istiod_lite.stores.directory import DirectoryStore
from istiod_lite.stores.manifests import ParseResult, default_parser


def _service(name: str, port: int = 80, namespace: str = "prod") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec: {{ports: [{{port: {port}}}]}}\n"
    )


def _key(name: str) -> ResourceKey:
    return ResourceKey("Service", "prod", name)


def _ports(store: DirectoryStore, name: str) -> object:
    return store.list()[_key(name)].manifest["spec"]["ports"][0]["port"]


def test_the_first_scan_loads_every_yaml_file_and_skips_other_and_hidden_files(tmp_path: Path) -> None:
    (tmp_path / "search.yaml").write_text(_service("search"))
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "cart.yml").write_text(_service("cart"))
    (tmp_path / "notes.txt").write_text("not config")
    (tmp_path / ".search.yaml.swp").write_text("garbage: [")
    store = DirectoryStore(tmp_path)
    assert store.scan() is True
    assert set(store.list()) == {_key("search"), _key("cart")}
    assert store.list()[_key("cart")].source == f"{tmp_path / 'nested' / 'cart.yml'}#1"
    assert store.errors == {} and store.revision == 1
    assert store.scan() is False and store.revision == 1  # nothing changed, nothing re-announced


def test_an_invalid_file_is_reported_and_its_previous_content_stays_in_force(tmp_path: Path) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(_service("search", 80) + "---\n" + _service("search-canary", 80))
    store = DirectoryStore(tmp_path)
    store.scan()
    before = store.list()

    path.write_text(_service("search", 8080) + "---\napiVersion: v1\nkind: Service\nmetadata: {}\n")
    assert store.scan() is False
    assert store.list() == before  # neither the valid nor the invalid half of the new file applies
    assert list(store.errors) == [str(path)]
    expected = f"{path}: document 2 (Service): metadata.name: required field missing"
    assert store.errors[str(path)] == (expected,)

    path.write_text(_service("search", 8080))
    assert store.scan() is True
    assert store.errors == {}
    assert _ports(store, "search") == 8080
    assert _key("search-canary") not in store.list()


def test_a_broken_new_file_contributes_nothing_but_an_error(tmp_path: Path) -> None:
    (tmp_path / "search.yaml").write_text(_service("search"))
    store = DirectoryStore(tmp_path)
    store.scan()
    (tmp_path / "broken.yaml").write_text("apiVersion: v1\nkind: [\n")
    assert store.scan() is False
    assert set(store.list()) == {_key("search")}
    assert "YAML syntax error at line 3" in store.errors[str(tmp_path / "broken.yaml")][0]


def test_deleting_a_file_removes_its_resources_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "search.yaml").write_text(_service("search"))
    (tmp_path / "cart.yaml").write_text(_service("cart"))
    (tmp_path / "broken.yaml").write_text("kind: [")
    store = DirectoryStore(tmp_path)
    store.scan()
    (tmp_path / "cart.yaml").unlink()
    (tmp_path / "broken.yaml").unlink()
    assert store.scan() is True
    assert set(store.list()) == {_key("search")} and store.errors == {}


def test_a_resource_defined_in_two_files_is_kept_from_the_first_and_reported_on_the_second(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(_service("search", 80))
    (tmp_path / "b.yaml").write_text(_service("search", 9090) + "---\n" + _service("cart"))
    store = DirectoryStore(tmp_path)
    store.scan()
    assert _ports(store, "search") == 80 and _key("cart") in store.list()
    (error,) = store.errors[str(tmp_path / "b.yaml")]
    assert "Service/prod/search is already defined at" in error and "a.yaml#1" in error


def test_a_vanished_directory_is_reported_and_the_last_content_stays(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "search.yaml").write_text(_service("search"))
    store = DirectoryStore(config)
    store.scan()
    (config / "search.yaml").unlink()
    config.rmdir()
    assert store.scan() is False
    assert set(store.list()) == {_key("search")}
    assert "cannot read config directory" in store.errors[str(config)][0]


async def test_run_polls_and_wakes_watchers_once_a_file_changes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(_service("search", 80))
    store = DirectoryStore(tmp_path, poll_interval=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        assert _ports(store, "search") == 80  # readiness means the first state is loaded
        revision = store.revision
        await trio.sleep(2)  # several polls with nothing to see
        assert store.revision == revision
        path.write_text(_service("search", 8080))
        with trio.fail_after(1):
            new_revision = await store.wait_changed(revision)
        assert new_revision == revision + 1 and _ports(store, "search") == 8080
        nursery.cancel_scope.cancel()


def test_a_same_size_rewrite_within_one_timestamp_tick_is_still_seen(tmp_path: Path) -> None:
    """Like git's racy index entries: a file not safely older than the last scan is re-read once more."""
    path = tmp_path / "search.yaml"
    path.write_text(_service("search", 8080))
    mtime_ns = path.stat().st_mtime_ns
    now = [mtime_ns + 1_000]  # the scans run within the same tick as the writes
    parsed: list[str] = []

    def counting_parser(text: str, source: str) -> ParseResult:
        parsed.append(source)
        return default_parser()(text, source)

    store = DirectoryStore(tmp_path, parser=counting_parser, wall_clock_ns=lambda: now[0])
    store.scan()
    path.write_text(_service("search", 9090))  # same size, and the same coarse timestamp:
    os.utime(path, ns=(mtime_ns, mtime_ns))
    assert store.scan() is True
    assert _ports(store, "search") == 9090
    assert len(parsed) == 2

    now[0] = mtime_ns + 10_000_000_000  # the file is now safely older than the last scan
    assert store.scan() is False  # one more read of the racy file: same text, so no parse
    assert store.scan() is False  # from here on its signature alone decides
    assert len(parsed) == 2
