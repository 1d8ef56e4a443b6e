"""A Kubernetes API emulator process for the kube tests: kmock's KubernetesEmulator plus what it lacks.

Run as ``python tests/unit/istiod_lite/kube/emulator.py TOKENS.json``; prints the mesh readiness line with
``{"api": "127.0.0.1:PORT"}``. It speaks the real REST and watch protocol (it is aiohttp on asyncio, in its
own process, so the code under test runs under trio unchanged). Added on top of kmock 0.8:

* ``metadata.uid``/``resourceVersion``/``creationTimestamp`` stamped on writes (kmock sets none), list
  responses carrying the current resourceVersion, and watches that start after the requested version;
* ``POST /emulator/bookmark`` (a BOOKMARK with the current version on every watch) and
  ``POST /emulator/end-watches`` (forget history up to now and end every watch normally, as a server
  timeout does: a client resuming from an older version than the last it was told gets 410);
* paged lists (``limit``/``continue``);
* a ``compact`` control call (``POST /emulator/compact``): applies the given changes *without* watch
  events, forgets history up to now, and breaks every open watch with ``ERROR 410 Gone`` — so a client
  only learns about those changes if it re-lists;
* Namespaces (kmock's URL parser reads ``/api/v1/namespaces`` as a namespace prefix), served from a
  dict with their own watch streams and JSON merge patches;
* TokenReview answered from the tokens file: ``{token: {"username", "uid", "audiences", "extra"}}``.

It is test scaffolding, not a Kubernetes: no admission, no RBAC, no garbage collection of owned objects.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums, rendering

RESOURCES = {
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/configmaps": ("ConfigMap", True),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True),
    "apps/v1/deployments": ("Deployment", True),
    "networking.istio.io/v1/virtualservices": ("VirtualService", True),
    "networking.istio.io/v1/destinationrules": ("DestinationRule", True),
    "security.istio.io/v1/authorizationpolicies": ("AuthorizationPolicy", True),
    "security.istio.io/v1/peerauthentications": ("PeerAuthentication", True),
    "gateway.networking.k8s.io/v1/gateways": ("Gateway", True),
    "gateway.networking.k8s.io/v1/httproutes": ("HTTPRoute", True),
}
VERBS = {"list", "watch", "get", "create", "patch", "update", "delete"}


_END: dict[str, Any] = {"type": "_END"}  # not sent: tells a watch stream to end normally (a server timeout)


def _gone(message: str) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": 410,
                   "reason": "Expired", "message": message},
    }


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` removes a key), as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class Emulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.counter = itertools.count(100)
        self.current = 99
        self.compacted = 0
        self.tokens: dict[str, dict[str, Any]] = {}
        self.namespaces: dict[str, dict[str, Any]] = {}
        self.namespace_watchers: list[asyncio.Queue[dict[str, Any]]] = []
        for path, (kind, namespaced) in RESOURCES.items():
            self.resources[path] = kmock.ResourceInfo(kind=kind, namespaced=namespaced, verbs=VERBS)

    def _next_version(self) -> str:
        self.current = next(self.counter)
        return str(self.current)

    def _stamp(self, obj: dict[str, Any], *, create: bool) -> None:
        metadata = obj.setdefault("metadata", {})
        if create:
            metadata.setdefault("uid", str(uuid.uuid4()))
            metadata.setdefault("creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        metadata["resourceVersion"] = self._next_version()

    # --------------------------------------------------------------------------------- kmock overrides

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.action in (enums.action.CREATE, enums.action.UPDATE) and isinstance(request.data, dict):
            self._stamp(request.data, create=request.action == enums.action.CREATE)
        return await super()._handle(request)

    async def _serve_list(self, request: rendering.Request) -> dict[str, Any]:
        listing = await super()._serve_list(request)
        assert isinstance(listing, dict)  # kmock's emulator lists are dicts
        listing["metadata"] = {"resourceVersion": str(self.current)}
        limit, start = int(request.params.get("limit") or 0), int(request.params.get("continue") or 0)
        if limit:  # pages, with the offset as the continue token
            items = sorted(listing["items"], key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            listing["items"] = items[start:start + limit]
            if start + limit < len(items):
                listing["metadata"]["continue"] = str(start + limit)
        return listing

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[Any]:
        yield b""
        assert request.resource is not None  # kmock routes only resource URLs here
        since = int(request.params.get("resourceVersion") or 0)
        if since and since < self.compacted:
            yield _gone(f"too old resource version: {since} ({self.compacted})")
            return
        async with self._lock:
            replay = [
                {"type": "ADDED", "object": obj.raw}
                for (resource, namespace, _name), obj in self._objects.items()
                if resource == request.resource and not obj.deleted
                and (request.namespace is None or namespace == request.namespace)
                and int(obj.raw.get("metadata", {}).get("resourceVersion") or 0) > since
            ]
        for event in replay:
            yield event
        async for event in self._buses[request.resource]:
            if event is _END:
                return
            if event.get("type") in ("ERROR", "BOOKMARK"):
                yield event
                if event["type"] == "ERROR":
                    return
                continue
            namespace = event.get("object", {}).get("metadata", {}).get("namespace")
            if request.namespace is None or namespace == request.namespace:
                yield event

    # --------------------------------------------------------------------------------- raw routes

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/")
        if path == "/emulator/compact" and raw.method == "POST":
            return await self._compact(await raw.json())
        if path == "/emulator/bookmark" and raw.method == "POST":
            bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.current)}}}
            return await self._broadcast(bookmark)
        if path == "/emulator/end-watches" and raw.method == "POST":
            self.compacted = self.current  # history before now is gone: resuming from older versions gets 410
            return await self._broadcast(_END)
        if path == "/apis/authentication.k8s.io/v1/tokenreviews" and raw.method == "POST":
            return self._review(await raw.json())
        if path == "/api/v1/namespaces" or (path.startswith("/api/v1/namespaces/") and path.count("/") == 4):
            return await self._namespaces(raw, path)
        response: aiohttp.web.StreamResponse = await super().__call__(raw)
        return response

    async def _broadcast(self, event: dict[str, Any]) -> aiohttp.web.Response:
        for path in RESOURCES:
            await self._buses[kmock.resource(path)].put(event)
        self._notify(event)
        return aiohttp.web.json_response({"resourceVersion": self.current})

    async def _compact(self, body: dict[str, Any]) -> aiohttp.web.Response:
        async with self._lock:
            for resource, namespace, name in body.get("delete", ()):
                self._objects[resource, namespace, name].delete()
            for resource, obj in body.get("create", ()):
                self._stamp(obj, create=True)
                self._objects[resource, obj["metadata"].get("namespace"), obj["metadata"]["name"]] = obj
            self.compacted = int(self._next_version())
        for path in RESOURCES:
            await self._buses[kmock.resource(path)].put(_gone("watch broken by compaction"))
        return aiohttp.web.json_response({"compacted": self.compacted})

    def _review(self, review: dict[str, Any]) -> aiohttp.web.Response:
        spec = review.get("spec", {})
        known = self.tokens.get(spec.get("token", ""))
        wanted = spec.get("audiences") or []
        if known is None or (wanted and not set(wanted) & set(known.get("audiences", []))):
            status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
        else:
            status = {
                "authenticated": True,
                "audiences": [a for a in known.get("audiences", []) if not wanted or a in wanted],
                "user": {"username": known["username"], "uid": known.get("uid", ""), "extra": known.get("extra", {})},
            }
        return aiohttp.web.json_response({**review, "status": status}, status=201)

    async def _namespaces(self, raw: aiohttp.web.BaseRequest, path: str) -> aiohttp.web.StreamResponse:
        name = path.split("/")[4] if path.count("/") == 4 else None
        if raw.method == "POST" and name is None:
            obj = await raw.json()
            if obj["metadata"]["name"] in self.namespaces:
                return aiohttp.web.json_response({"kind": "Status", "code": 409, "reason": "AlreadyExists",
                                                  "message": "namespace exists"}, status=409)
            self._stamp(obj, create=True)
            self.namespaces[obj["metadata"]["name"]] = obj
            self._notify({"type": "ADDED", "object": obj})
            return aiohttp.web.json_response(obj, status=201)
        if raw.method == "GET" and name is not None:
            if name in self.namespaces:
                return aiohttp.web.json_response(self.namespaces[name])
            return aiohttp.web.json_response({"kind": "Status", "code": 404, "message": "not found"}, status=404)
        if raw.method == "PATCH" and name is not None and name in self.namespaces:
            obj = _merge_patch(self.namespaces[name], await raw.json())
            self._stamp(obj, create=False)
            self.namespaces[name] = obj
            self._notify({"type": "MODIFIED", "object": obj})
            return aiohttp.web.json_response(obj)
        if raw.method == "DELETE" and name is not None and name in self.namespaces:
            obj = self.namespaces.pop(name)
            self._notify({"type": "DELETED", "object": obj})
            return aiohttp.web.json_response(obj)
        if raw.method == "GET" and raw.query.get("watch") != "true":
            return aiohttp.web.json_response({"apiVersion": "v1", "kind": "NamespaceList",
                                              "metadata": {"resourceVersion": str(self.current)},
                                              "items": list(self.namespaces.values())})
        if raw.method == "GET":
            return await self._watch_namespaces(raw)
        return aiohttp.web.json_response({"kind": "Status", "code": 405, "message": "not emulated"}, status=405)

    def _notify(self, event: dict[str, Any]) -> None:
        for queue in self.namespace_watchers:
            queue.put_nowait(event)

    async def _watch_namespaces(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        since = int(raw.query.get("resourceVersion") or 0)
        if since and since < self.compacted:
            await response.write(json.dumps(_gone(f"too old resource version: {since}")).encode() + b"\n")
            await response.write_eof()
            return response
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.namespace_watchers.append(queue)
        try:
            for obj in list(self.namespaces.values()):
                if int(obj["metadata"]["resourceVersion"]) > since:
                    await response.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            while True:
                event = await queue.get()
                if event is _END:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        finally:
            self.namespace_watchers.remove(queue)
        await response.write_eof()
        return response


async def main(tokens: dict[str, Any]) -> None:
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        emulator.tokens = tokens
        ready = {"event": "ready", "component": "kube-emulator", "addresses": {"api": f"{server.host}:{server.port}"}}
        print(json.dumps(ready), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        asyncio.run(main(json.load(handle)))
