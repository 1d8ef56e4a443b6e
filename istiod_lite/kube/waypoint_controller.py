"""The waypoint controller: keeps each ``istio-waypoint`` Gateway's ServiceAccount, Deployment and Service
in place and its status current (the decisions are in :mod:`istiod_lite.kube.waypoint_objects`).

It reads Gateways from the Kubernetes store's cache (no watch of its own) and reconciles every waypoint
Gateway on each store revision: get each owned object, create it if missing, merge-patch it if a field we
set differs, then patch the Gateway's status subresource if its conditions changed. Deletion needs no code:
the owner references let Kubernetes' garbage collector delete the objects with their Gateway. A failed
reconcile is logged and retried with backoff (``trio.sleep``); the next store change also retries.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

import trio

from istiod_lite.kube.api import RESOURCES, KubeApi, KubeApiError
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.waypoint_objects import (
    WaypointSettings,
    desired_objects,
    gateway_status,
    is_waypoint,
    needs_update,
    status_differs,
)
from istiod_lite.stores.base import Revision
from meshcore.telemetry.logs import get_logger

_log = get_logger("istiod_lite.kube.waypoint")

RETRY_MIN = 0.5
RETRY_MAX = 30.0


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class WaypointController:
    def __init__(self, api: KubeApi, store: KubernetesStore, settings: WaypointSettings) -> None:
        self._api = api
        self._store = store
        self._settings = settings
        self._passes = Revision()  # completed reconcile passes (tests and the config dump wait on it)

    @property
    def reconciles(self) -> int:
        return self._passes.value

    async def wait_reconciled(self, since: int) -> int:
        """Return once a pass after ``since`` has completed."""
        return await self._passes.wait_changed(since)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        retry = RETRY_MIN
        while True:
            revision = self._store.revision
            try:
                await self.reconcile_all()
            except KubeApiError as exc:
                _log.warning("waypoint reconcile failed; retrying", error=str(exc), retry_in=retry)
                await trio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_MIN
            await self._store.wait_changed(revision)

    async def reconcile_all(self) -> None:
        for (_namespace, _name), gateway in sorted(self._store.objects("Gateway").items()):
            if is_waypoint(gateway) and (gateway.get("metadata") or {}).get("uid"):
                await self.reconcile(gateway)
        self._passes.bump()

    async def reconcile(self, gateway: Mapping[str, Any]) -> None:
        namespace = gateway["metadata"].get("namespace") or "default"
        name = gateway["metadata"]["name"]
        service: Mapping[str, Any] | None = None
        for kind, desired in desired_objects(gateway, self._settings).items():
            current = await self._ensure(kind, namespace, name, desired)
            if kind == "Service":
                service = current
        status = gateway_status(gateway, service, _now())
        if status_differs(gateway, status):
            await self._api.patch(RESOURCES["Gateway"], name, namespace, {"status": status}, status=True)
            _log.info("waypoint gateway status updated", gateway=f"{namespace}/{name}",
                      conditions={c["type"]: c["status"] for c in status["conditions"]})

    async def _ensure(self, kind: str, namespace: str, name: str, desired: dict[str, Any]) -> dict[str, Any]:
        resource = RESOURCES[kind]
        existing = await self._api.get(resource, name, namespace)
        if existing is None:
            _log.info("creating waypoint object", kind=kind, name=f"{namespace}/{name}")
            return await self._api.create(resource, desired)
        if needs_update(existing, desired):
            _log.info("updating waypoint object", kind=kind, name=f"{namespace}/{name}")
            patch = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")}
            return await self._api.patch(resource, name, namespace, patch)
        return existing
