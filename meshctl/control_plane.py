"""How meshctl reaches istiod_lite's admin API: find it, call it, turn failures into clear errors.

istiod_lite writes ``<state-dir>/istiod.json`` (pid and addresses) while it runs and removes it on a
clean exit, so ``--state-dir`` (default ``.mesh/``, the same default as ``meshctl up``) is all a user
has to say; ``--istiod-admin host:port`` talks to one started elsewhere. Every failure names what was
tried and what to do next: nothing running there, a stale file from a crashed process, or a refusal
with every validation error istiod_lite reported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.admin.messages import ClientResponse
from meshcore.errors import MeshError

DEFAULT_STATE_DIR = Path(".mesh")
INFO_FILE = "istiod.json"


class NoMeshRunning(MeshError):
    """No istiod_lite is recorded in the state directory."""

    hint = "start one with `meshctl up`, or pass --state-dir DIR / --istiod-admin HOST:PORT"


class IstiodUnreachable(MeshError):
    """The recorded (or given) admin address does not answer."""

    hint = "{advice}"


class AdminCallFailed(MeshError):
    """istiod_lite answered with an error; ``errors`` lists every problem it reported."""

    hint = "{advice}"

    def __init__(self, message: str, errors: list[str], advice: str) -> None:
        super().__init__(message, advice=advice)
        self.errors = errors


class AdminRefused(MeshError):
    """istiod_lite refused a request with one message (its own hint is already in the text)."""


@attrs.frozen
class AdminTarget:
    host: str
    port: int
    origin: str
    """Where the address came from (``.mesh/istiod.json`` or ``--istiod-admin``), for error messages."""
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_host_port(text: str, origin: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise NoMeshRunning(f"{origin}: {text!r} is not HOST:PORT")
    return host, int(port)


def find_admin(state_dir: Path, override: str | None = None) -> AdminTarget:
    """The admin address to call: ``override`` if given, else what istiod_lite recorded in ``state_dir``."""
    if override:
        host, port = parse_host_port(override, "--istiod-admin")
        return AdminTarget(host, port, origin="--istiod-admin")
    path = state_dir / INFO_FILE
    shown = f"{state_dir}{os.sep}" if not str(state_dir).endswith(os.sep) else str(state_dir)
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoMeshRunning(f"no mesh running from {shown}") from None
    except (OSError, ValueError) as exc:
        raise NoMeshRunning(f"cannot read {path}: {exc}") from None
    admin = info.get("addresses", {}).get("admin") if isinstance(info, dict) else None
    if not isinstance(admin, str):
        raise NoMeshRunning(f"{path} does not record istiod_lite's admin address")
    host, port = parse_host_port(admin, str(path))
    pid = info.get("pid")
    return AdminTarget(host, port, origin=str(path), pid=pid if isinstance(pid, int) else None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ControlPlaneClient:
    """The admin API calls meshctl makes; each returns decoded data or raises one of the errors above."""

    def __init__(self, target: AdminTarget, *, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout

    async def _call(
        self, method: str, path: str, query: Mapping[str, str | None] | None = None, **kwargs: Any
    ) -> ClientResponse:
        params = {k: v for k, v in (query or {}).items() if v}
        target = path + (f"?{urlencode(params)}" if params else "")
        try:
            return await http_request(
                self.target.host, self.target.port, method, target, timeout=self.timeout, **kwargs
            )
        except AdminRequestFailed as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: AdminRequestFailed) -> IstiodUnreachable:
        target = self.target
        if target.pid is not None and not _pid_alive(target.pid):
            advice = (
                f"istiod_lite (pid {target.pid}) recorded in {target.origin} has exited; "
                "start the mesh again with `meshctl up`"
            )
        else:
            advice = f"is istiod_lite running? (address from {target.origin})"
        return IstiodUnreachable(
            f"istiod_lite admin API at {target.address} is not answering: {exc.message}", advice=advice
        )

    @staticmethod
    def _decode(response: ClientResponse, what: str) -> Any:
        if response.status < 400:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("errors"), list):  # validation: every problem
            raise AdminCallFailed(
                f"{what} refused: {body.get('error', f'HTTP {response.status}')}",
                [str(e) for e in body["errors"]],
                advice="fix the problems listed; nothing was changed",
            )
        raise AdminRefused(f"{what} failed: {response.text().strip() or f'HTTP {response.status}'}")

    async def apply(self, text: str, *, namespace: str | None = None, source: str = "apply") -> Any:
        response = await self._call(
            "POST", "/apis/apply", {"namespace": namespace}, body=text, headers={"x-mesh-source": source}
        )
        return self._decode(response, "apply")

    async def delete(self, text: str, *, namespace: str | None = None, source: str = "delete") -> Any:
        response = await self._call(
            "POST", "/apis/delete", {"namespace": namespace}, body=text, headers={"x-mesh-source": source}
        )
        return self._decode(response, "delete")

    async def resources(self, kind: str | None, namespace: str | None) -> Any:
        response = await self._call("GET", "/apis/resources", {"kind": kind, "namespace": namespace})
        return self._decode(response, "get")

    async def resources_yaml(self, kind: str | None, namespace: str | None) -> str:
        query = {"kind": kind, "namespace": namespace, "output": "yaml"}
        response = await self._call("GET", "/apis/resources", query)
        if response.status >= 400:
            self._decode(response, "get")
        return response.text()

    async def config_dump(self) -> Any:
        """The translated snapshot istiod_lite publishes (``/debug/config_dump``)."""
        return self._decode(await self._call("GET", "/debug/config_dump"), "config_dump")

    async def proxy_status(self) -> Any:
        return self._decode(await self._call("GET", "/debug/proxy-status"), "proxy-status")
