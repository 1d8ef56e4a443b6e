"""istiod_lite's admin API: handlers called with plain requests over real stores in a temp state dir,
and, where the push side matters, an in-process Istiod on loopback with a real PushClient.

Translation is the real one; these tests only rely on what it yields for a core Service (one pushed
``service`` resource keyed ``namespace/hostname``) and for an L7 attribute in a ztunnel-bound policy
(a warning).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

from istiod_lite.admin_api import AdminApi
from istiod_lite.server import Istiod, IstiodAddresses, IstiodOptions
from meshcore.admin.http import AdminServer
from meshcore.admin.messages import BadRequest, Request, Response, split_target
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient

SEARCH = "apiVersion: v1\nkind: Service\nmetadata: {name: search, namespace: prod}\nspec: {ports: [{port: 80}]}\n"
CART = "apiVersion: v1\nkind: Service\nmetadata: {name: cart}\nspec: {ports: [{port: 8080}]}\n"
BAD_TWICE = (
    "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: prod}\nspec: {ports: [{port: x}]}\n"
    "---\napiVersion: v1\nkind: Servic\nmetadata: {name: b}\n"
)
FILE_SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: files, namespace: prod}\nspec: {ports: [{port: 9}]}\n"


def _request(method: str, target: str, body: str = "") -> Request:
    path, query = split_target(target)
    return Request(method=method, target=target, path=path, query=query, headers=[], body=body.encode())


def _istiod(tmp_path: Path, *, config: str | None = FILE_SERVICE) -> Istiod:
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    if config is not None:
        (config_dir / "files.yaml").write_text(config)
    options = IstiodOptions(state_dir=tmp_path / "state", config_dir=config_dir, control_port=0, admin_port=0)
    istiod = Istiod(options)
    assert istiod.directory is not None
    istiod.directory.scan()
    return istiod


def _json(response: Response) -> Any:
    return json.loads(response.body)


async def test_apply_stores_resources_and_answers_like_kubectl(tmp_path: Path) -> None:
    api = AdminApi(_istiod(tmp_path))
    first = _json(await api.apply(_request("POST", "/apis/apply", SEARCH)))
    assert first["results"] == [{"kind": "Service", "namespace": "prod", "name": "search", "result": "created"}]
    again = _json(await api.apply(_request("POST", "/apis/apply", SEARCH)))
    assert [r["result"] for r in again["results"]] == ["unchanged"]
    changed = _json(await api.apply(_request("POST", "/apis/apply", SEARCH.replace("80}", "81}"))))
    assert [r["result"] for r in changed["results"]] == ["configured"]
    saved = json.loads((tmp_path / "state" / "applied.json").read_text())
    assert [item["spec"]["ports"] for item in saved["items"]] == [[{"port": 81}]]


async def test_apply_namespace_parameter_fills_in_resources_that_name_none(tmp_path: Path) -> None:
    api = AdminApi(_istiod(tmp_path))
    answer = _json(await api.apply(_request("POST", "/apis/apply?namespace=shop", CART + "---\n" + SEARCH)))
    assert [(r["namespace"], r["name"]) for r in answer["results"]] == [("shop", "cart"), ("prod", "search")]


async def test_invalid_apply_is_a_400_with_every_error_and_stores_nothing(tmp_path: Path) -> None:
    istiod = _istiod(tmp_path)
    api = AdminApi(istiod)
    response = await api.apply(_request("POST", "/apis/apply", SEARCH + "---\n" + BAD_TWICE))
    assert response.status == 400
    errors = _json(response)["errors"]
    assert len(errors) == 2
    assert "document 2 (Service prod/a): spec.ports[0].port" in errors[0]
    assert "document 3" in errors[1] and "Servic" in errors[1]
    assert istiod.applied.list() == {}
    assert not (tmp_path / "state" / "applied.json").exists()


async def test_an_empty_or_non_utf8_body_is_refused_with_what_to_send(tmp_path: Path) -> None:
    api = AdminApi(_istiod(tmp_path))
    with pytest.raises(BadRequest, match="empty"):
        await api.apply(_request("POST", "/apis/apply", "  \n"))
    request = Request("POST", "/apis/apply", "/apis/apply", {}, [], b"\xff\xfe")
    with pytest.raises(BadRequest, match="UTF-8"):
        await api.apply(request)


async def test_delete_removes_applied_resources_and_explains_file_defined_ones(tmp_path: Path) -> None:
    api = AdminApi(_istiod(tmp_path))
    await api.apply(_request("POST", "/apis/apply", SEARCH))
    answer = _json(await api.delete(_request("POST", "/apis/delete", SEARCH + "---\n" + FILE_SERVICE + "---\n" + CART)))
    by_name = {r["name"]: r for r in answer["results"]}
    assert by_name["search"]["result"] == "deleted"
    assert by_name["files"]["result"] == "not found"
    assert "files.yaml#1; remove it there" in by_name["files"]["note"]
    assert by_name["cart"] == {"kind": "Service", "namespace": "default", "name": "cart", "result": "not found"}


async def test_resources_filter_by_kind_alias_and_namespace_in_json_and_yaml(tmp_path: Path) -> None:
    api = AdminApi(_istiod(tmp_path))
    await api.apply(_request("POST", "/apis/apply?namespace=shop", CART + "---\n" + SEARCH))
    listed = _json(await api.resources(_request("GET", "/apis/resources?kind=svc&namespace=prod")))
    assert [(i["name"], i["source"]) for i in listed["items"]] == [
        ("files", f"{tmp_path / 'config' / 'files.yaml'}#1"),
        ("search", "applied"),
    ]
    text = (await api.resources(_request("GET", "/apis/resources?kind=services&output=yaml"))).body.decode()
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(text)] == ["files", "search", "cart"]
    by_accept = _request("GET", "/apis/resources?kind=services")
    by_accept = Request(
        by_accept.method, by_accept.target, by_accept.path, by_accept.query, [("accept", "application/yaml")]
    )
    assert (await api.resources(by_accept)).body.decode() == text
    with pytest.raises(BadRequest, match="unknown resource kind 'gizmo'") as info:
        await api.resources(_request("GET", "/apis/resources?kind=gizmo"))
    assert "VirtualService" in str(info.value)


async def test_an_invalid_config_file_is_reported_while_its_previous_content_stays(tmp_path: Path) -> None:
    istiod = _istiod(tmp_path)
    api = AdminApi(istiod)
    path = tmp_path / "config" / "files.yaml"
    path.write_text(FILE_SERVICE.replace("port: 9", "port: nine"))
    assert istiod.directory is not None
    istiod.directory.scan()
    errors = _json(await api.errors(_request("GET", "/apis/errors")))["errors"]
    assert list(errors) == [str(path)] and 'expected integer, got "nine"' in errors[str(path)][0]
    listed = _json(await api.resources(_request("GET", "/apis/resources?kind=Service")))
    assert [i["manifest"]["spec"]["ports"] for i in listed["items"]] == [[{"port": 9}]]
    assert listed["errors"] == errors


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Istiod, IstiodAddresses]]:
    istiod = _istiod(tmp_path)
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(istiod.run)
        yield istiod, addresses
        nursery.cancel_scope.cancel()


async def test_a_running_istiod_is_ready_records_itself_and_dumps_what_it_published(
    running: tuple[Istiod, IstiodAddresses], tmp_path: Path
) -> None:
    istiod, addresses = running
    assert istiod.ready() is None
    info = json.loads((tmp_path / "state" / "istiod.json").read_text())
    assert info["addresses"] == addresses.to_json()
    dump = istiod.config_dump()
    assert set(dump["snapshot"]["service"]) == {"prod/files.prod.svc.cluster.local"}
    assert dump["published"]["service"] == istiod.push.catalog()["service"].version


async def test_metrics_count_pushes_acks_and_observe_convergence_per_type(
    running: tuple[Istiod, IstiodAddresses],
) -> None:
    istiod, addresses = running
    token = istiod.tokens.issue("node-a")
    applied: list[str] = []

    class Applier:
        def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
            applied.append(type_name)

    client = PushClient(
        f"wss://{addresses.control}/v1/xds",
        token,
        control_plane_context(istiod.ca.trust_bundle_pem()),
        ["service"],
        Applier(),
        backoff=Backoff(initial=0.05, maximum=0.2),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        with trio.fail_after(5):
            await client.wait_synced()
            while "pilot_proxy_convergence_time_count" not in _metrics_text(istiod):
                # the metrics task observes right after the ACK's status change, maybe after our check
                with trio.move_on_after(0.05):
                    await istiod.push.wait_changed()
        text = _metrics_text(istiod)
        nursery.cancel_scope.cancel()
    assert applied == ["service"]
    assert "pilot_xds 1" in text
    assert "pilot_xds_pushes_total 1" in text and "pilot_xds_acks_total 1" in text
    assert "pilot_total_xds_rejects 0" in text
    assert 'pilot_proxy_convergence_time_count{type="service"} 1' in text


def _metrics_text(istiod: Istiod) -> str:
    istiod.metrics.refresh()
    return istiod.metrics.registry.expose()


async def test_the_admin_server_serves_the_api_routes(running: tuple[Istiod, IstiodAddresses]) -> None:
    istiod, _ = running
    server = AdminApi(istiod).mount(AdminServer("probe"))
    routes = sorted(server._routes)
    for route in [
        ("POST", "/apis/apply"),
        ("POST", "/apis/delete"),
        ("GET", "/apis/resources"),
        ("GET", "/debug/proxy-status"),
        ("GET", "/debug/config_dump"),
        ("GET", "/metrics"),
        ("GET", "/healthz/ready"),
    ]:
        assert route in routes


L7_ALLOW = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: prod}
spec:
  selector: {matchLabels: {app: search}}
  action: ALLOW
  rules: [{to: [{operation: {methods: [GET]}}]}]
"""


async def test_translation_warnings_are_reported_with_the_errors(tmp_path: Path) -> None:
    istiod = _istiod(tmp_path)
    api = AdminApi(istiod)
    assert (await api.apply(_request("POST", "/apis/apply", L7_ALLOW))).status == 200
    istiod.build(istiod.store.list())  # what the feed does on the store's change
    warnings = _json(await api.errors(_request("GET", "/apis/errors")))["warnings"]
    assert warnings == list(istiod.translation_warnings) and len(warnings) == 1
    assert "prod/get-only" in warnings[0] and "methods" in warnings[0]
    assert istiod.config_dump()["translation_warnings"] == warnings
