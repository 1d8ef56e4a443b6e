"""AppliedStore (apply/delete, persisted across restarts) and MergedStore (applied wins over files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from istiod_lite.stores.applied import AppliedStore, CorruptStateFile
from istiod_lite.stores.base import ResourceKey, StoreError
from istiod_lite.stores.directory import DirectoryStore
from istiod_lite.stores.merged import MergedStore

SEARCH = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: search, namespace: prod}\nspec: {ports: [{port: 80}]}\n"
)
SEARCH_8080 = SEARCH.replace("80}", "8080}")
POLICY = (
    "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
    "metadata: {name: deny-all}\nspec: {}\n"
)
SEARCH_KEY = ResourceKey("Service", "prod", "search")


def test_apply_reports_created_configured_and_unchanged_like_kubectl(tmp_path: Path) -> None:
    store = AppliedStore(tmp_path / "applied.json")
    assert store.apply_text(SEARCH).created == (SEARCH_KEY,)
    assert store.apply_text(SEARCH).unchanged == (SEARCH_KEY,)
    assert store.revision == 1  # an unchanged apply does not wake watchers
    assert store.apply_text(SEARCH_8080).configured == (SEARCH_KEY,)
    assert store.list()[SEARCH_KEY].manifest["spec"] == {"ports": [{"port": 8080}]}
    assert store.list()[SEARCH_KEY].source == "applied"


def test_dash_n_sets_the_namespace_of_resources_that_name_none(tmp_path: Path) -> None:
    store = AppliedStore(tmp_path / "applied.json")
    report = store.apply_text(POLICY + "---\n" + SEARCH, namespace="dev")
    assert report.created == (ResourceKey("AuthorizationPolicy", "dev", "deny-all"), SEARCH_KEY)


def test_applied_resources_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "applied.json"
    store = AppliedStore(path)
    store.apply_text(SEARCH + "---\n" + POLICY)
    store.delete([ResourceKey("AuthorizationPolicy", "default", "deny-all")])
    restarted = AppliedStore(path)
    assert restarted.list() == store.list()
    assert set(restarted.list()) == {SEARCH_KEY}


def test_an_invalid_apply_changes_nothing_in_memory_or_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "applied.json"
    store = AppliedStore(path)
    store.apply_text(SEARCH)
    on_disk = path.read_text()
    with pytest.raises(StoreError, match=r"document 2 \(Service\): metadata\.name: required field missing"):
        store.apply_text(SEARCH_8080 + "---\napiVersion: v1\nkind: Service\nmetadata: {}\n")
    assert store.list()[SEARCH_KEY].manifest["spec"] == {"ports": [{"port": 80}]}
    assert path.read_text() == on_disk and store.revision == 1


def test_delete_by_manifest_reports_what_was_not_there(tmp_path: Path) -> None:
    store = AppliedStore(tmp_path / "applied.json")
    store.apply_text(SEARCH)
    report = store.delete_text(SEARCH + "---\n" + POLICY, namespace="prod")
    assert report.deleted == (SEARCH_KEY,)
    assert report.not_found == (ResourceKey("AuthorizationPolicy", "prod", "deny-all"),)
    assert store.list() == {}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "cannot read applied resources"),
        (json.dumps({"items": "nope"}), "no 'items' list"),
        (json.dumps({"items": [{"kind": "Service"}]}), "apiVersion: required field missing"),
    ],
)
def test_a_state_file_that_no_longer_validates_stops_the_start_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "applied.json"
    path.write_text(content)
    with pytest.raises(CorruptStateFile, match=expected) as info:
        AppliedStore(path)
    assert str(path) in str(info.value)


async def test_merged_store_prefers_applied_over_files_and_wakes_on_either(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "search.yaml").write_text(SEARCH)
    directory = DirectoryStore(config)
    directory.scan()
    applied = AppliedStore(tmp_path / "applied.json")
    merged = MergedStore([directory, applied])
    assert merged.list()[SEARCH_KEY].source.endswith("search.yaml#1")
    assert not merged.overrides

    revision = merged.revision
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_apply_soon, applied)  # runs once the watcher below is blocked
            revision = await merged.wait_changed(revision)
    assert merged.list()[SEARCH_KEY].manifest["spec"] == {"ports": [{"port": 8080}]}
    assert merged.overrides == (f"{SEARCH_KEY} from applied overrides the one at {config / 'search.yaml'}#1",)

    (config / "cart.yaml").write_text(SEARCH.replace("search", "cart"))
    directory.scan()
    assert await merged.wait_changed(revision) == revision + 1
    assert set(merged.list()) == {SEARCH_KEY, ResourceKey("Service", "prod", "cart")}


async def _apply_soon(applied: AppliedStore) -> None:
    await trio.lowlevel.checkpoint()
    applied.apply_text(SEARCH_8080)
