"""The one door to the Kubernetes API: lightkube's AsyncClient behind plain dicts and declared verbs.

Every call names a resource from :data:`RESOURCES` and a verb; a call that :mod:`istiod_lite.kube.rbac_usage`
does not declare raises :class:`UndeclaredApiCall` *before* it reaches the server. That makes the
declaration the complete list of what the code can do, which is what the deploy/ ClusterRole is checked
against: if a new call is added without granting it, every test that exercises it fails, not a cluster.

lightkube is used for configuration (kubeconfig, in-cluster token), HTTP and decoding; objects travel as
``dict`` so the store, the controller and the emulator tests all speak the wire format. Its watch retry
sleeps with asyncio, so :meth:`KubeApi.watch` reads one stream and returns; callers retry with ``trio.sleep``.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import httpcore2
import httpx2
from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.resource_registry import resource_registry
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import PatchType

from meshcore.errors import MeshError
from schemas.kinds import KINDS


@attrs.frozen
class ApiResource:
    """A Kubernetes resource type as the REST API names it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _builtin() -> dict[str, ApiResource]:
    return {
        r.kind: r
        for r in (
            ApiResource("", "v1", "Namespace", "namespaces", namespaced=False),
            ApiResource("", "v1", "Pod", "pods"),
            ApiResource("", "v1", "Service", "services"),
            ApiResource("", "v1", "ServiceAccount", "serviceaccounts"),
            ApiResource("", "v1", "ConfigMap", "configmaps"),
            ApiResource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
            ApiResource("apps", "v1", "Deployment", "deployments"),
            ApiResource("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False),
        )
    }


def _custom() -> dict[str, ApiResource]:
    return {
        info.kind: ApiResource(info.group, info.versions[0], info.kind, info.plural, info.namespaced)
        for info in KINDS.values()
        if info.is_custom
    }


_BUILTIN = _builtin()
RESOURCES: Mapping[str, ApiResource] = {**_BUILTIN, **_custom()}
"""Kind → resource, for every kind this package reads or writes (CRD kinds come from schemas/)."""


class KubeApiError(MeshError):
    """The API server refused or failed a call; ``status`` is the HTTP status when there was one."""

    hint = "{reason}"

    @property
    def status(self) -> int | None:
        code = self.context.get("status")
        return code if isinstance(code, int) else None


class UndeclaredApiCall(MeshError):
    """Code called the API with a verb rbac_usage does not declare (a bug: the ClusterRole lacks it)."""

    hint = "add ({verb}, {resource}) to istiod_lite/kube/rbac_usage.py and to the ClusterRole in deploy/"


class WatchExpired(Exception):
    """The API server answered 410 Gone: the resourceVersion is too old; list again."""


@attrs.frozen
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Mapping[str, Any]


LIST_PAGE = 500  # objects per list request, as client-go's reflector pages
MAX_LIST_PAGES = 10_000
MAX_EVENT_BYTES = 32 * 1024 * 1024  # a watch line larger than this is not a Kubernetes object we can use

Permissions = Mapping[tuple[str, str], frozenset[str]]
"""(API group, plural[/subresource]) → verbs, in RBAC's vocabulary."""


def load_config(kubeconfig: Path | None = None) -> SingleConfig:
    """In-cluster service account when running in a pod, else ``kubeconfig`` / $KUBECONFIG / ~/.kube/config.

    kubeconfig ``exec:`` credential plugins are not supported (lightkube runs them with asyncio).
    """
    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else KubeConfig.from_env()
    except Exception as exc:  # lightkube raises ConfigError, KeyError, OSError for the same problem
        raise KubeApiError(
            f"no usable Kubernetes configuration: {exc}",
            reason="run inside a pod with a service account, or pass --kubeconfig / set KUBECONFIG",
        ) from exc
    single = config.get()
    if single is None:
        raise KubeApiError("the kubeconfig has no current context", reason="run kubectl config use-context")
    if single.user is not None and single.user.exec is not None:
        raise KubeApiError(
            "kubeconfig exec credential plugins are not supported",
            reason="use a token or client certificate user entry (e.g. a service account token)",
        )
    return single


def _lightkube_class(resource: ApiResource) -> Any:
    """lightkube's own typed class for built-in kinds (it registers those itself), a generic one for CRDs."""
    if resource.kind in _BUILTIN:
        return resource_registry.load(resource.api_version, resource.kind)
    factory = create_namespaced_resource if resource.namespaced else create_global_resource
    return factory(resource.group, resource.version, resource.kind, resource.plural)


class KubeApi:
    """Dict-in, dict-out calls limited to ``permitted``; one per process, closed with :meth:`aclose`."""

    def __init__(self, client: AsyncClient, permitted: Permissions, *, list_page: int = LIST_PAGE) -> None:
        self._client = client
        self._permitted = permitted
        self._list_page = list_page

    @classmethod
    def connect(cls, config: SingleConfig, permitted: Permissions, *, list_page: int = LIST_PAGE) -> KubeApi:
        return cls(AsyncClient(config), permitted, list_page=list_page)

    async def aclose(self) -> None:
        await self._client.close()

    def _check(self, verb: str, resource: ApiResource, subresource: str = "") -> Any:
        name = f"{resource.plural}/{subresource}" if subresource else resource.plural
        if verb not in self._permitted.get((resource.group, name), frozenset()):
            raise UndeclaredApiCall(f"undeclared API call: {verb} {resource.group}/{name}", verb=verb, resource=name)
        return _lightkube_class(resource)

    async def list(self, resource: ApiResource, fields: str = "") -> tuple[list[dict[str, Any]], str]:
        """Every object of ``resource`` in all namespaces (matching the ``fields`` selector), and the version.

        Read as raw JSON, in pages, like :meth:`watch`: lightkube's typed models drop fields they do not
        know, and a list and a watch must describe an object identically or every re-list looks like a change.
        """
        cls = self._check("list", resource)
        generic = self._client._client
        params: dict[str, Any] = {"fieldSelector": fields or None, "limit": str(self._list_page)}
        what = f"list {resource.plural}"
        items: list[dict[str, Any]] = []
        for _page in range(MAX_LIST_PAGES):
            request = generic.prepare_request(
                "list", res=cls, namespace="*" if resource.namespaced else None, params=dict(params)
            )
            try:
                response: httpx2.Response = await generic.send(  # type: ignore[no-untyped-call]
                    generic.build_adapter_request(request)
                )
            except httpx2.HTTPError as exc:
                raise _api_error(what, exc) from exc
            if response.status_code != 200:
                raise _status_error(what, response.status_code, response.text)
            try:
                body = response.json()
                page, metadata = body["items"] or [], body.get("metadata") or {}
            except (ValueError, KeyError, TypeError) as exc:
                raise KubeApiError(
                    f"{what}: not a list: {response.text[:200]!r}", reason="is the server a Kubernetes API?"
                ) from exc
            for item in page:
                item.setdefault("apiVersion", resource.api_version)
                item.setdefault("kind", resource.kind)
                items.append(item)
            if not metadata.get("continue"):
                return items, str(metadata.get("resourceVersion") or "")
            params["continue"] = metadata["continue"]
        raise KubeApiError(f"{what}: more than {MAX_LIST_PAGES} pages", reason="the list never ended")

    async def watch(
        self, resource: ApiResource, resource_version: str, fields: str = ""
    ) -> AsyncGenerator[WatchEvent, None]:
        """Events after ``resource_version`` (bookmarks included) until the server ends the stream.

        Raises :class:`WatchExpired` on 410 Gone. The stream is read here rather than through lightkube's
        watch, which retries with asyncio and leaves its line iterators unclosed when an ERROR event arrives.
        """
        cls = self._check("watch", resource)
        generic = self._client._client
        request = generic.prepare_request(
            "list",
            res=cls,
            namespace="*" if resource.namespaced else None,
            watch=True,
            params={
                "resourceVersion": resource_version or None,
                "fieldSelector": fields or None,
                "allowWatchBookmarks": "true",
                # The server ends the stream after this; spread over 5-10 min as client-go does.
                "timeoutSeconds": str(random.randint(300, 600)),
            },
        )
        request.timeout = generic._watch_timeout
        what = f"watch {resource.plural}"
        try:
            response: httpx2.Response = await generic.send(  # type: ignore[no-untyped-call]
                generic.build_adapter_request(request), stream=True
            )
            try:
                if response.status_code != 200:
                    await response.aread()
                    raise _status_error(what, response.status_code, response.text)
                buffer = b""
                async with aclosing(_raw_chunks(response)) as chunks:
                    async for chunk in chunks:
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        if len(buffer) > MAX_EVENT_BYTES:
                            raise KubeApiError(
                                f"{what}: an event exceeds {MAX_EVENT_BYTES} bytes", reason="a huge object?"
                            )
                        for line in lines:
                            if line.strip():
                                yield _watch_event(what, line.decode(), resource)
            finally:
                await response.aclose()
        except httpx2.HTTPError as exc:
            raise _api_error(what, exc) from exc
        except (httpcore2.NetworkError, httpcore2.ProtocolError) as exc:  # from the unwrapped stream (_raw_chunks)
            raise KubeApiError(
                f"{what}: {type(exc).__name__}: {exc}", reason="the API server connection broke"
            ) from exc

    async def get(self, resource: ApiResource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        cls = self._check("get", resource)
        try:
            return _as_dict(await self._client.get(cls, name, namespace=namespace), resource)
        except httpx2.HTTPError as exc:
            if _status_code(exc) == 404:
                return None
            raise _api_error(f"get {resource.plural} {namespace}/{name}", exc) from exc

    async def create(self, resource: ApiResource, obj: Mapping[str, Any]) -> dict[str, Any]:
        cls = self._check("create", resource)
        try:
            return _as_dict(await self._client.create(cls.from_dict(dict(obj))), resource)
        except httpx2.HTTPError as exc:
            raise _api_error(f"create {resource.plural}", exc) from exc

    async def patch(
        self, resource: ApiResource, name: str, namespace: str | None, patch: Mapping[str, Any], *, status: bool = False
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (or of its ``status`` subresource)."""
        cls = self._check("patch", resource, "status" if status else "")
        target = cls.Status if status else cls
        try:
            result = await self._client.patch(
                target, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE
            )
        except httpx2.HTTPError as exc:
            raise _api_error(f"patch {resource.plural} {namespace}/{name}", exc) from exc
        return _as_dict(result, resource)


def _raw_chunks(response: httpx2.Response) -> AsyncGenerator[bytes, None]:
    """The response body's chunks from httpcore's own stream, which closes what it iterates.

    httpx2's response stream wrapper iterates httpcore's generator without closing it, so abandoning a watch
    mid-stream (410, shutdown) leaves a suspended generator that trio reports as a ResourceWarning when it is
    collected. Falls back to ``aiter_raw`` if the private attributes are not there.
    """
    core = getattr(getattr(response.stream, "_stream", None), "_httpcore_stream", None)
    if core is None:
        return response.aiter_raw()
    iterator: AsyncGenerator[bytes, None] = core.__aiter__()
    return iterator


def _watch_event(what: str, line: str, resource: ApiResource) -> WatchEvent:
    try:
        event = json.loads(line)
        event_type, obj = str(event["type"]), event["object"]
    except (ValueError, KeyError, TypeError) as exc:
        raise KubeApiError(
            f"{what}: not a watch event: {line[:200]!r}", reason="is the server a Kubernetes API?"
        ) from exc
    if event_type == "ERROR":
        code = int(obj.get("code") or 0)
        if code == 410:
            raise WatchExpired(str(obj.get("message") or "resource version too old"))
        raise _status_error(what, code, str(obj.get("message")))
    obj.setdefault("apiVersion", resource.api_version)
    obj.setdefault("kind", resource.kind)
    return WatchEvent(event_type, obj)


def _status_error(what: str, code: int, message: str) -> Exception:
    if code == 410:
        return WatchExpired(message)
    reason = _REASONS.get(code, "see the API server's message")
    return KubeApiError(f"{what}: HTTP {code}: {message[:300]}", reason=reason, status=code)


_REASONS = {
    409: "the object already exists (create) or changed meanwhile (update)",
    401: "the credentials were refused; check the service account token or kubeconfig user",
    403: "RBAC forbids it; compare the ClusterRole in deploy/ with istiod_lite/kube/rbac_usage.py",
}


def _as_dict(obj: Any, resource: ApiResource) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    data.setdefault("apiVersion", resource.api_version)  # list items may leave these out
    data.setdefault("kind", resource.kind)
    return data


def _status_code(exc: httpx2.HTTPError) -> int | None:
    """The HTTP status of a refused call (lightkube makes an ApiError only for an exact JSON content type)."""
    if isinstance(exc, ApiError):
        return exc.status.code
    if isinstance(exc, httpx2.HTTPStatusError):
        return exc.response.status_code
    return None


def _api_error(what: str, exc: httpx2.HTTPError) -> KubeApiError:
    if isinstance(exc, httpx2.HTTPStatusError):
        code = _status_code(exc)
        message = exc.status.message if isinstance(exc, ApiError) else exc.response.text[:300]
        reason = _REASONS.get(code or 0, "see the API server's message")
        return KubeApiError(f"{what}: HTTP {code}: {message}", reason=reason, status=code)
    return KubeApiError(
        f"{what}: {type(exc).__name__}: {exc}",
        reason="is the API server reachable from here? check the kubeconfig server URL and the network",
    )
