"""istiod_lite as one component: stores → translate → push, the CA behind node authorization, the
control endpoint proxies dial, and the admin API operators (and ``meshctl``) call.

Wiring, in the order data flows::

    DirectoryStore(--config-dir) ┐
    AppliedStore(<state>/applied.json) ┤
    PodInventoryFile(<state>/pods.json) ┴→ MergedStore → feed(build) → PushServer ─┐
                                                          │                        ├→ ControlServer /v1/xds
                                                          └→ TranslatedPlacement → CsrService /v1/ca
    AdminServer(--admin-port): admin_api routes, /metrics, /healthz/ready

``build`` is the translation seam (:data:`Translator`): typed user resources in, the pushed state out
(type → key → JSON body). It runs once per settled burst of store changes (:class:`SettledStore`), and
the push server debounces what goes out.
What the proxies and the CSR service see is always the same snapshot: placement is updated from the
workloads of each successful build, and a failed build changes neither.

Files in the state directory: ``ca/`` (the CA), ``node-tokens.json``, ``tokens/<node>.token`` (one per
``--nodes`` entry, 0600, for the runner to hand to each ztunnel), ``root-cert.pem`` (the trust bundle
proxies verify istiod_lite with), ``applied.json`` (``meshctl apply``), ``pods.json`` (read: where the
runner placed each pod, see :mod:`istiod_lite.pod_inventory`), and ``istiod.json`` (where this
process listens; removed on exit) which is how ``meshctl`` finds a running control plane.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from istiod_lite.admin_api import AdminApi
from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.convergence import AckRow, ConvergenceTracker
from istiod_lite.csr_service import CsrService
from istiod_lite.placement import TranslatedPlacement
from istiod_lite.pod_inventory import INVENTORY_FILE, Pod, PodInventoryFile
from istiod_lite.push.feed import feed
from istiod_lite.push.server import PushServer
from istiod_lite.settled_store import SettledStore
from istiod_lite.stores.applied import AppliedStore
from istiod_lite.stores.base import ResourceKey, Store, StoredResource
from istiod_lite.stores.directory import DirectoryStore
from istiod_lite.stores.merged import MergedStore
from istiod_lite.tokens import Authenticator, NodeTokenAuthenticator, NodeTokens
from istiod_lite.translate import PodInfo, VipAllocator, translate
from istiod_lite.translate.inputs import pods_from_deployments
from meshcore.admin.http import AdminServer
from meshcore.errors import MeshError
from meshcore.identity.spiffe import Identity
from meshcore.push.protocol import JSON
from meshcore.ready import format_address
from meshcore.telemetry.logs import get_logger
from meshcore.telemetry.metrics import Registry
from waypoint.pushed import TYPE_NAME as WAYPOINT_TYPE

Translator = Callable[[Sequence[Any], Sequence[Pod] | None], Mapping[str, Mapping[str, JSON]]]
"""Typed user resources (``schemas`` objects) and the runner's pods (``None``: no runner) → the pushed
state: type name → resource key → JSON body."""

class PodSource(Protocol):
    """Where pods come from: the runner's pods file locally, the API server on Kubernetes."""

    @property
    def pods(self) -> Sequence[Pod] | None: ...


Background = Callable[..., Awaitable[None]]
"""``async def run(*, task_status)``: started with ``nursery.start`` before istiod_lite reports ready."""

INFO_FILE = "istiod.json"
APPLIED_FILE = "applied.json"
ROOT_FILE = "root-cert.pem"
TOKENS_DIR = "tokens"
ADMIN_MAX_BODY = 16 * 1024 * 1024  # a large `meshctl apply -f dir/` is one request

_log = get_logger("istiod_lite")


class StartupError(MeshError):
    """istiod_lite cannot start with the given directories or options."""

    hint = "{reason}"


@attrs.frozen(kw_only=True)
class IstiodOptions:
    state_dir: Path
    config_dir: Path | None = None
    host: str = "127.0.0.1"
    """Where proxies reach the control endpoint (``0.0.0.0`` to serve other machines)."""
    admin_host: str | None = None
    """The admin API changes the mesh without authentication, so it stays on loopback: by default the
    control address when that is a loopback address (each local mesh has its own 127.x address, so two
    meshes never clash on the admin port), else 127.0.0.1; set it to widen deliberately."""
    control_port: int = 15012
    admin_port: int = 15014
    nodes: tuple[str, ...] = ()
    poll_interval: float = 0.5
    debounce: float = 0.1
    """Quiet period before a push goes out (the push server's debounce)."""
    translate_debounce: float = 0.05
    """Quiet period before re-translating after store changes (see :mod:`istiod_lite.settled_store`)."""

    @property
    def effective_admin_host(self) -> str:
        if self.admin_host is not None:
            return self.admin_host
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = self.host == "localhost"
        return self.host if loopback else "127.0.0.1"


@attrs.frozen
class IstiodAddresses:
    control: str
    admin: str

    def to_json(self) -> dict[str, str]:
        return {"control": self.control, "admin": self.admin}


class MeshTranslation:
    """The default :data:`Translator`: :func:`istiod_lite.translate.translate` with Istio's rules.

    One VIP allocator lives as long as the process, so a Service keeps its VIP across rebuilds. Without
    a runner's inventory the pods are the Deployments' replicas on their ``nodeName`` (identities and
    placement, no addresses). The warnings of the last build (e.g. an L7 attribute in a ztunnel-bound
    policy) are kept for the admin API: the rule is applied fail-closed, and the user must be told.
    """

    name = "istiod_lite.translate"
    types = ("workload", "service", "authorization", WAYPOINT_TYPE)
    """What it pushes; a proxy subscribing to anything else is told so instead of waiting forever."""

    def __init__(self) -> None:
        self._vips = VipAllocator()
        self.warnings: tuple[str, ...] = ()

    def __call__(self, resources: Sequence[Any], pods: Sequence[Pod] | None) -> Mapping[str, Mapping[str, JSON]]:
        if pods is None:
            placed = pods_from_deployments(resources)
        else:
            placed = [
                PodInfo(
                    name=p.name,
                    namespace=p.namespace,
                    ip=p.ip,
                    node=p.node,
                    labels=p.labels,
                    service_account=p.service_account,
                    deployment=p.deployment,
                    container_ports=p.container_ports,
                )
                for p in pods
            ]
        snapshot = translate(resources, placed, vip_allocator=self._vips)
        self.warnings = snapshot.warnings
        return snapshot.to_push()


class PushMetrics:
    """istiod_lite's ``/metrics``, with Istio's pilot metric names; counters follow the push server."""

    def __init__(self, registry: Registry, push: PushServer) -> None:
        self.registry = registry
        self._push = push
        self._connected = registry.gauge("pilot_xds", "Proxies connected to this istiod_lite.")
        self._pushes = registry.counter("pilot_xds_pushes_total", "Pushes sent to proxies.")
        self._acks = registry.counter("pilot_xds_acks_total", "Pushes proxies applied (ACK).")
        self._rejects = registry.counter("pilot_total_xds_rejects", "Pushes proxies rejected (NACK).")
        self._updates = registry.counter("pilot_xds_config_updates_total", "New published config versions.")
        self._convergence = registry.histogram(
            "pilot_proxy_convergence_time",
            "Seconds from publishing a version to each proxy's ACK of it.",
            ("type",),
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self._tracker = ConvergenceTracker()

    def refresh(self) -> None:
        """Bring the counters up to the push server's statistics (called before each scrape)."""
        stats = self._push.stats
        self._connected.labels().set(stats.connected)
        for counter, value in (
            (self._pushes, stats.pushes),
            (self._acks, stats.acks),
            (self._rejects, stats.nacks),
            (self._updates, stats.catalog_updates),
        ):
            child = counter.labels()
            child.inc(max(0, value - child.value))

    def observe(self, now: float) -> None:
        """Feed the convergence histogram from the current catalog and proxy status."""
        self._tracker.on_catalog({t: p.version for t, p in self._push.catalog().items()}, now)
        rows = self._push.status()
        self._tracker.forget(row.proxy for row in rows)
        samples = self._tracker.on_status((AckRow(r.proxy, r.type, r.acked_version) for r in rows), now)
        for type_name, seconds in samples:
            self._convergence.labels(type_name).observe(seconds)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            self.observe(trio.current_time())
            await self._push.wait_changed()


class Istiod:
    """The whole control plane; construct (reads and creates state), then ``await nursery.start(run)``."""

    def __init__(
        self,
        options: IstiodOptions,
        *,
        translator: Translator | None = None,
        config_stores: Sequence[Store] = (),
        pod_source: PodSource | None = None,
        authenticator: Authenticator | None = None,
        background: Sequence[Background] = (),
        ca: CertificateAuthority | None = None,
    ) -> None:
        """``config_stores`` are merged after the directory and applied stores; ``pod_source`` replaces the
        runner's pods file; ``authenticator`` replaces node tokens; ``background`` tasks start before
        readiness (e.g. the Kubernetes store, which must have listed once)."""
        self.options = options
        state = options.state_dir
        try:
            state.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create state directory {state}: {exc.strerror}",
                reason="pass a writable --state-dir",
            ) from exc
        if options.config_dir is not None and not options.config_dir.is_dir():
            raise StartupError(
                f"config directory {options.config_dir} does not exist",
                reason="create it (it may be empty) or leave out --config-dir",
            )
        self._translator: Translator = translator if translator is not None else MeshTranslation()
        self.translator_name = str(getattr(self._translator, "name", getattr(translator, "__qualname__", "custom")))
        self.ca = ca if ca is not None else CertificateAuthority.load_or_create(state)
        self.tokens = NodeTokens(state)
        self.applied = AppliedStore(state / APPLIED_FILE)
        self.directory = (
            DirectoryStore(options.config_dir, poll_interval=options.poll_interval)
            if options.config_dir is not None
            else None
        )
        self.pod_file = PodInventoryFile(state / INVENTORY_FILE, poll_interval=options.poll_interval)
        self.pod_file.scan()
        self.pods: PodSource = pod_source if pod_source is not None else self.pod_file
        self.authenticator: Authenticator = (
            authenticator if authenticator is not None else NodeTokenAuthenticator(self.tokens)
        )
        self.background = tuple(background)
        stores: list[Store] = [
            s for s in (self.directory, self.applied, self.pod_file, *config_stores) if s is not None
        ]
        self.store = MergedStore(stores)
        self.push = PushServer(
            types=getattr(self._translator, "types", None),
            debounce=options.debounce,
            max_delay=max(1.0, options.debounce),
        )
        self.placement = TranslatedPlacement()
        self.csr = CsrService(self.ca, self.placement)
        self.metrics = PushMetrics(Registry(), self.push)
        self.admin = AdminServer("istiod", max_body_bytes=ADMIN_MAX_BODY)
        self.snapshot: Mapping[str, Mapping[str, JSON]] | None = None
        self.snapshot_revision: int | None = None
        self.translation_error: str | None = None
        self.translation_warnings: tuple[str, ...] = ()
        self.addresses: IstiodAddresses | None = None
        self._write_bootstrap_files()

    # ---------------------------------------------------------------------------------- state files

    def _write_bootstrap_files(self) -> None:
        state = self.options.state_dir
        _write_file(state / ROOT_FILE, self.ca.trust_bundle_pem(), 0o644)
        tokens_dir = state / TOKENS_DIR
        tokens_dir.mkdir(mode=0o700, exist_ok=True)
        for node in self.options.nodes:
            _write_file(tokens_dir / f"{node}.token", self.tokens.issue(node).encode(), 0o600)

    def _write_info(self, addresses: IstiodAddresses) -> None:
        info = {
            "pid": os.getpid(),
            "addresses": addresses.to_json(),
            "state_dir": str(self.options.state_dir),
            "config_dir": None if self.options.config_dir is None else str(self.options.config_dir),
            "started": time.time(),
        }
        _write_file(self.options.state_dir / INFO_FILE, json.dumps(info, indent=2).encode(), 0o644)

    def _remove_info(self) -> None:
        path = self.options.state_dir / INFO_FILE
        try:
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass

    # ---------------------------------------------------------------------------------- translation

    def build(self, resources: Mapping[ResourceKey, StoredResource]) -> Mapping[str, Mapping[str, JSON]]:
        """The feed's build step: translate, then let node authorization see the same workloads."""
        typed = [resources[key].obj for key in sorted(resources)]
        try:
            snapshot = self._translator(typed, self.pods.pods)
        except Exception as exc:
            self.translation_error = f"{type(exc).__name__}: {exc}"
            raise
        self.translation_error = None
        warnings = tuple(getattr(self._translator, "warnings", ()))
        if warnings != self.translation_warnings:
            for warning in warnings:
                _log.warning("translation warning", warning=warning)
        self.translation_warnings = warnings
        self.snapshot = snapshot
        self.snapshot_revision = self.store.revision
        self.placement.update(snapshot.get("workload", {}))
        self._write_waypoint_tokens(snapshot.get(WAYPOINT_TYPE, {}))
        return snapshot

    def _write_waypoint_tokens(self, waypoints: Mapping[str, JSON]) -> None:
        """``tokens/waypoint-<ns>-<name>.token`` per waypoint: locally what its ServiceAccount token is on
        Kubernetes — the credential with which it obtains its own identity (and no other) from the CA."""
        tokens_dir = self.options.state_dir / TOKENS_DIR
        for key, body in waypoints.items():
            identity = body.get("identity") if isinstance(body, dict) else None
            if not isinstance(identity, str):
                continue
            parsed = Identity.parse(identity)
            path = tokens_dir / f"waypoint-{key.replace('/', '-')}.token"
            if not path.exists():
                token = self.tokens.issue_workload(parsed.namespace, parsed.service_account)
                _write_file(path, token.encode(), 0o600)

    def ready(self) -> str | None:
        """``None`` once the first translated state is published; otherwise what is missing."""
        if self.snapshot is None:
            return f"no translated config yet ({self.translation_error or 'starting'})"
        missing = sorted(set(self.snapshot) - set(self.push.catalog()))
        if missing:
            return f"not yet published: {', '.join(missing)}"
        return None

    def config_dump(self) -> dict[str, Any]:
        """What ``/debug/config_dump`` shows: the translated snapshot and what was published of it."""
        return {
            "translator": self.translator_name,
            "store_revision": self.store.revision,
            "snapshot_revision": self.snapshot_revision,
            "translation_error": self.translation_error,
            "translation_warnings": list(self.translation_warnings),
            "published": {t: p.version for t, p in sorted(self.push.catalog().items())},
            "snapshot": self.snapshot,
            "node_authorization": self.placement.identities(),
        }

    # ---------------------------------------------------------------------------------- running

    async def run(self, *, task_status: trio.TaskStatus[IstiodAddresses] = trio.TASK_STATUS_IGNORED) -> None:
        """Load config, publish it, bind both ports, write ``istiod.json``; serve until cancelled."""
        options = self.options
        AdminApi(self).mount(self.admin)
        control = ControlServer(
            ssl_context=serving_context(self.ca, ip_addresses=_ip_sans(options.host)),
            authenticator=self.authenticator,
            handlers={"/v1/ca": self.csr, "/v1/xds": self.push.handler},
            host=options.host,
            port=options.control_port,
        )
        try:
            async with trio.open_nursery() as nursery:
                if self.directory is not None:
                    await nursery.start(self.directory.run)
                await nursery.start(self.pod_file.run)
                for task in self.background:
                    await nursery.start(task)
                await nursery.start(self.push.run)
                await nursery.start(
                    feed, SettledStore(self.store, quiet=options.translate_debounce), self.build, self.push
                )
                for type_name in self.snapshot or {}:
                    await self.push.wait_published(type_name)
                await nursery.start(self.metrics.run)
                nursery.start_soon(self._report_store_errors)
                control_host, control_port = await nursery.start(control.run)
                admin_host, admin_port = await nursery.start(
                    self.admin.run, options.effective_admin_host, options.admin_port
                )
                self.addresses = IstiodAddresses(
                    control=format_address(control_host, control_port),
                    admin=format_address(admin_host, admin_port),
                )
                self._write_info(self.addresses)
                _log.info(
                    "istiod_lite ready",
                    control=self.addresses.control,
                    admin=self.addresses.admin,
                    translator=self.translator_name,
                    resources=len(self.store.list()),
                )
                task_status.started(self.addresses)
        finally:
            self._remove_info()

    async def _report_store_errors(self) -> None:
        """Log each file that is (no longer) in force: an operator tailing the log sees why at once."""
        reported: Mapping[str, tuple[str, ...]] = {}
        while True:
            errors = self.store.errors
            for source, problems in sorted(errors.items()):
                if reported.get(source) != problems:
                    _log.warning(
                        "config not in force; its previous content stays", source=source, errors=list(problems)
                    )
            for source in sorted(set(reported) - set(errors)):
                _log.info("config error resolved", source=source)
            reported = errors
            await trio.sleep(self.options.poll_interval)


def _ip_sans(host: str) -> tuple[str, ...]:
    """The serving certificate names 127.0.0.1 always, plus the bind address when it is an IP."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ("127.0.0.1",)
    return tuple(dict.fromkeys(("127.0.0.1", host)))


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically (temp + rename) and with ``mode`` from the first byte: tokens are secrets."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
