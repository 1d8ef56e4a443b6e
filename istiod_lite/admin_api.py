"""istiod_lite's admin HTTP API: what ``meshctl apply/delete/get/proxy-status`` and operators call.

Served by the h11 :class:`~meshcore.admin.http.AdminServer` on localhost (why h11 and not
hypercorn+starlette is argued there: a route table and small bodies, native trio, visible limits).

- ``POST /apis/apply[?namespace=NS]`` — a YAML body (one or more documents). Validated as a whole with
  the schemas package; any error → 400 with *every* error and nothing stored. Otherwise stored in the
  applied store (persisted before it takes effect) → 200 with kubectl's created/configured/unchanged.
  ``namespace`` fills in resources that name none (``kubectl -n``).
- ``POST /apis/delete[?namespace=NS]`` — the same YAML; deletes what it names from the applied store.
- ``GET /apis/resources[?kind=K][&namespace=NS][&output=json|yaml]`` — what is in force (files and
  applied), with where each came from; ``kind`` accepts Kind, plural or short name, any case; YAML
  also with ``Accept: application/yaml``.
- ``GET /apis/errors`` — files (or applied state) that are not in force, with every error; warnings
  (file warnings, applied resources overriding files, translation warnings such as fail-closed rules).
- ``GET /debug/proxy-status`` — per proxy and type: sent version/nonce, ACKed version, NACK error,
  and the verdict SYNCED / STALE / NACKED against the published version.
- ``GET /debug/config_dump`` — the translated snapshot and what was published of it.
- ``GET /metrics``, ``GET /healthz/ready``, ``GET|POST /logging``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from istiod_lite.stores.applied import ApplyReport, DeleteReport
from istiod_lite.stores.base import ResourceKey, StoredResource, StoreError
from istiod_lite.stores.manifests import default_parser, with_namespace
from meshcore.admin.endpoints import mount_standard
from meshcore.admin.http import AdminServer
from meshcore.admin.messages import BadRequest, Request, Response
from meshcore.telemetry.logs import get_logger
from meshcore.telemetry.metrics import CONTENT_TYPE
from schemas.kinds import KINDS

if TYPE_CHECKING:
    from istiod_lite.server import Istiod

_log = get_logger("istiod_lite.admin")

YAML_TYPE = "application/yaml"


def resolve_kind(name: str) -> str:
    """``svc``, ``services``, ``Service`` → ``Service``; a 400 listing the known kinds otherwise."""
    wanted = name.lower()
    for info in KINDS.values():
        if wanted in (info.kind.lower(), info.plural, *info.short_names):
            return info.kind
    known = ", ".join(sorted(info.kind for info in KINDS.values()))
    raise BadRequest(f"unknown resource kind {name!r}", f"known kinds: {known} (or their plurals/short names)")


def _key_json(key: ResourceKey) -> dict[str, str]:
    return {"kind": key.kind, "namespace": key.namespace, "name": key.name}


def _results(pairs: list[tuple[tuple[ResourceKey, ...], str]]) -> list[dict[str, str]]:
    return [{**_key_json(key), "result": result} for keys, result in pairs for key in keys]


def _text_body(request: Request) -> str:
    try:
        text = request.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("request body is not UTF-8", "send the YAML file's bytes as they are") from exc
    if not text.strip():
        raise BadRequest("request body is empty", "send one or more YAML documents")
    return text


def _with_default_namespace(text: str, namespace: str) -> str:
    """The YAML text with ``namespace`` filled in where a document names none; document numbers kept
    (an empty document stays one), so errors still point at the user's document."""
    documents = list(yaml.safe_load_all(text))
    filled = [with_namespace(d, namespace) if isinstance(d, dict) else d for d in documents]
    return yaml.safe_dump_all(filled, sort_keys=False)


def _namespace(request: Request) -> str | None:
    namespace = request.query_one("namespace")
    return namespace or None


class AdminApi:
    """The handlers, over a running :class:`~istiod_lite.server.Istiod`'s stores and push server."""

    def __init__(self, istiod: Istiod) -> None:
        self._istiod = istiod
        self._parse = default_parser()

    def mount(self, server: AdminServer) -> AdminServer:
        mount_standard(server, ready=self._istiod.ready, log_control=True)
        server.add_route("POST", "/apis/apply", self.apply)
        server.add_route("POST", "/apis/delete", self.delete)
        server.add_route("GET", "/apis/resources", self.resources)
        server.add_route("GET", "/apis/errors", self.errors)
        server.add_route("GET", "/debug/proxy-status", self.proxy_status)
        server.add_route("GET", "/debug/config_dump", self.config_dump)
        server.add_route("GET", "/metrics", self.metrics)
        return server

    # ---------------------------------------------------------------------------------- changes

    async def apply(self, request: Request) -> Response:
        text = _text_body(request)
        source = request.header("x-mesh-source") or "apply"
        checked = self._parse(text, source)
        namespace = _namespace(request)
        if checked.ok and namespace:  # -n can make two documents one resource: check what is stored
            checked = self._parse(_with_default_namespace(text, namespace), source)
        if not checked.ok:
            _log.info("apply rejected", source=source, errors=len(checked.errors))
            return self._rejected(list(checked.errors), list(checked.warnings))
        try:
            report: ApplyReport = self._istiod.applied.apply_text(text, namespace=_namespace(request), source=source)
        except StoreError as exc:  # e.g. -n turned two documents into the same resource
            return self._rejected([exc.message], list(checked.warnings))
        results = _results(
            [(report.created, "created"), (report.configured, "configured"), (report.unchanged, "unchanged")]
        )
        _log.info("applied", source=source, created=len(report.created), configured=len(report.configured))
        return Response.json({"results": results, "warnings": list(checked.warnings)})

    def _rejected(self, errors: list[str], warnings: list[str]) -> Response:
        return Response.json(
            {"error": f"{len(errors)} error(s); nothing was applied", "errors": errors, "warnings": warnings},
            400,
        )

    async def delete(self, request: Request) -> Response:
        text = _text_body(request)
        try:
            report: DeleteReport = self._istiod.applied.delete_text(
                text, namespace=_namespace(request), source=request.header("x-mesh-source") or "delete"
            )
        except StoreError as exc:
            return Response.json({"error": exc.message, "errors": [exc.message], "warnings": []}, 400)
        results = _results([(report.deleted, "deleted")])
        in_force = self._istiod.store.list()
        for key in report.not_found:
            row = {**_key_json(key), "result": "not found"}
            if key in in_force:  # defined in a config file: deleting it is editing that file
                row["note"] = f"defined in {in_force[key].source}; remove it there"
            results.append(row)
        return Response.json({"results": results})

    # ---------------------------------------------------------------------------------- reading

    async def resources(self, request: Request) -> Response:
        kind_name = request.query_one("kind")
        kind = resolve_kind(kind_name) if kind_name and kind_name != "all" else None
        namespace = _namespace(request)
        accept = request.header("accept") or ""
        output = (request.query_one("output") or ("yaml" if "yaml" in accept else "json")).lower()
        if output not in ("json", "yaml"):
            raise BadRequest(f"unknown output format {output!r}", "use output=json or output=yaml")
        selected = [
            resource
            for key, resource in sorted(self._istiod.store.list().items())
            if (kind is None or key.kind == kind) and (namespace is None or key.namespace in (namespace, ""))
        ]
        if output == "yaml":
            text = yaml.safe_dump_all([_plain(r.manifest) for r in selected], sort_keys=False, default_flow_style=False)
            return Response.text(text, content_type=YAML_TYPE)
        return Response.json({"items": [_item(r) for r in selected], "errors": self._store_errors()})

    def _store_errors(self) -> dict[str, list[str]]:
        return {source: list(problems) for source, problems in sorted(self._istiod.store.errors.items())}

    async def errors(self, _request: Request) -> Response:
        directory = self._istiod.directory
        warnings = [] if directory is None else [w for ws in directory.warnings.values() for w in ws]
        warnings += list(self._istiod.store.overrides)
        warnings += list(self._istiod.translation_warnings)
        return Response.json({"errors": self._store_errors(), "warnings": warnings})

    async def proxy_status(self, _request: Request) -> Response:
        push = self._istiod.push
        return Response.json(
            {
                "published": {t: p.version for t, p in sorted(push.catalog().items())},
                "proxies": [row.to_json() for row in push.status()],
            }
        )

    async def config_dump(self, _request: Request) -> Response:
        return Response.json(self._istiod.config_dump())

    async def metrics(self, _request: Request) -> Response:
        self._istiod.metrics.refresh()
        return Response.text(self._istiod.metrics.registry.expose(), content_type=CONTENT_TYPE)


def _item(resource: StoredResource) -> dict[str, Any]:
    return {**_key_json(resource.key), "source": resource.source, "manifest": _plain(resource.manifest)}


def _plain(value: Any) -> Any:
    """Mappings and tuples as dicts and lists, so both JSON and ``yaml.safe_dump`` accept them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
