"""`meshctl up`: a whole mesh on one machine — control plane, a ztunnel per node, the user's pods.

:class:`MeshRunner` owns everything it starts. In order: it takes the state-directory lock (a second
runner on the same directory is refused), loads and validates the manifests, plans pods and gives
each its own loopback address (proxy mode, DESIGN §4), publishes them in ``<state>/pods.json``, then
starts istiod_lite (with a copy of the manifests as its config directory), one ztunnel per node and
the pod processes, each waited for until ready. While it runs it keeps ``<state>/status.json``
current and follows the control plane's resources, so a Deployment applied or deleted later with
`meshctl apply`/`delete` starts or stops pods live. :meth:`MeshRunner.request_stop` drains in the
reverse order — pods, then proxies, then the control plane — and removes what it created.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.errors import MeshError
from meshctl.runner.addresses import AddressPlan, mesh_block
from meshctl.runner.components import (
    EXPLICIT_PROXY_PORT,
    istiod_spec,
    pod_name,
    pod_spec,
    waypoint_name,
    waypoint_spec,
    waypoint_token,
    ztunnel_spec,
)
from meshctl.runner.inventory import PodRecord, write_inventory
from meshctl.runner.leftovers import MARKER_ENV, marker, reap_leftovers, start_watchdog
from meshctl.runner.lock import StateDirLock
from meshctl.runner.netns_mode import PodNetworks, netns_available, zds_socket
from meshctl.runner.state import MeshStatus, PodStatus, ProxyStatus, remove_status, write_status
from meshctl.runner.supervisor import ProcessFailed, ProcessSpec, SupervisedProcess, Supervisor
from meshctl.runner.workloads import (
    GATEWAY_NAME_LABEL,
    DesiredState,
    PodPlan,
    WaypointPlan,
    desired_state,
    diff_pods,
)
from schemas.load import load_paths, load_text, yaml_files
from ztunnel.capture.fabric import PodNetwork

CONTROL_PLANE_OFFSET = 251  # 127.X.0.251: past the last node address (MAX_NODES = 250)
RECONCILE_INTERVAL = 1.0
MESH_READY_TIMEOUT = 30.0
WAYPOINT_VIEW_TIMEOUT = 15.0
ENROLLMENT_TIMEOUT = 10.0

Reporter = Callable[[str], None]


class UpError(MeshError):
    hint = "{advice}"


@attrs.frozen(kw_only=True)
class UpOptions:
    files: tuple[Path, ...]
    state_dir: Path
    nodes: int = 2
    capture: str = "auto"
    python: str = sys.executable
    ztunnel_workers: int = 1


def choose_capture(requested: str) -> tuple[str, str]:
    """(mode, explanation): auto picks netns where it can run (root, iproute2, iptables), else proxy."""
    if requested == "proxy":
        return "proxy", "requested"
    available, why = netns_available()
    if requested == "netns":
        if not available:
            raise UpError(f"--capture netns is not possible here: {why}",
                          advice="run as root with iproute2 and iptables installed, or use --capture proxy")
        return "netns", "requested"
    if available:
        return "netns", f"auto: {why}"
    return "proxy", f"auto: netns capture needs root, iproute2 and iptables ({why})"


def node_names(count: int) -> list[str]:
    if not 1 <= count <= 250:
        raise UpError(f"--nodes {count} is outside 1..250", advice="pick how many local nodes to simulate")
    return [f"node-{index + 1}" for index in range(count)]


def control_plane_address(block: ipaddress.IPv4Network) -> str:
    return str(block.network_address + CONTROL_PLANE_OFFSET)


class MeshRunner:
    """Run with ``await nursery.start(runner.run)`` (started → the status); stop with :meth:`request_stop`."""

    def __init__(self, options: UpOptions, report: Reporter = print) -> None:
        self.options = options
        self.state_dir = options.state_dir.resolve()
        self.report = report
        self.capture, self.capture_reason = choose_capture(options.capture)
        self.nodes = node_names(options.nodes)
        self.block = mesh_block(self.state_dir)
        self.addresses = AddressPlan(self.block)
        self.node_addresses = {name: self.addresses.node_address(i) for i, name in enumerate(self.nodes)}
        self.control_host = control_plane_address(self.block)
        self.config_dir = self.state_dir / "config"
        self.log_dir = self.state_dir / "logs"
        self.status = MeshStatus(runner_pid=os.getpid(), state_dir=str(self.state_dir), capture=self.capture)
        self.status.nodes = dict(self.node_addresses)
        self.istiod_admin = ""
        self.istiod_control = ""
        self._lock = StateDirLock(self.state_dir)
        self.networks = PodNetworks(self.state_dir, self.nodes) if self.capture == "netns" else None
        self._netns: dict[str, PodNetwork] = {}  # pod or waypoint key → its namespace (netns mode)
        self._supervisor: Supervisor | None = None
        self._pods: dict[str, PodPlan] = {}
        self._pod_ips: dict[str, str] = {}
        self._waypoints: dict[str, WaypointPlan] = {}
        self._waypoint_ips: dict[str, str] = {}
        self._waypoint_admin: dict[str, str] = {}  # netns mode: waypoint key → its admin address (host side)
        self._listening: set[str] = set()  # pods whose ztunnel listener on podIP:15080 was seen
        self._stop = trio.Event()
        self._startup = trio.CancelScope()
        self.finished = trio.Event()
        self._status_changed = trio.Event()
        self._resources_digest = ""

    # ------------------------------------------------------------------------------------ public

    def request_stop(self) -> None:
        """Drain and stop (also during startup, which is then abandoned)."""
        self._stop.set()
        self._startup.cancel()

    async def run(self, *, task_status: trio.TaskStatus[MeshStatus] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self._lock.acquire()
        except MeshError:
            self.finished.set()
            raise
        watchdog: trio.Process | None = None
        try:
            desired = self._load_manifests()
            left = await reap_leftovers(self.state_dir)
            if left:
                self.report(f"stopped {len(left)} process(es) an earlier runner of {self.state_dir} left behind")
            watchdog = await start_watchdog(self.state_dir)
            self._prepare_state_dir()
            if self.networks is not None:
                if await self.networks.recover():
                    self.report(f"removed the pod network an earlier runner of {self.state_dir} left behind")
                await self.networks.create()
            async with trio.open_nursery() as nursery:
                supervisor = Supervisor(self.log_dir, self._on_event,
                                        common_env={MARKER_ENV: marker(self.state_dir)})
                self._supervisor = await nursery.start(supervisor.run)
                try:
                    with self._startup:
                        await self._start_mesh(desired, nursery)
                    self._write_status()
                    task_status.started(self.status)
                    nursery.start_soon(self._follow_resources)
                    await self._stop.wait()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._drain()
                    nursery.cancel_scope.cancel()
        finally:
            if self.networks is not None:
                with trio.CancelScope(shield=True):
                    await self.networks.destroy()
            self._cleanup_state_dir()
            if watchdog is not None:  # EOF: it finds nothing left after a drain, and exits
                with trio.CancelScope(shield=True):
                    assert watchdog.stdin is not None
                    await watchdog.stdin.aclose()
                    await watchdog.wait()
            self._lock.release()
            self.finished.set()

    # ------------------------------------------------------------------------------------ startup

    def _load_manifests(self) -> DesiredState:
        result = load_paths(list(self.options.files))
        if not result.ok:
            shown = "\n  ".join(str(issue) for issue in result.errors)
            raise UpError(
                f"the manifests have {len(result.errors)} error(s):\n  {shown}",
                advice="fix them (`meshctl validate -f ...` checks without starting anything)",
            )
        desired = desired_state(result.resources, self.nodes)
        if desired.problems:
            raise UpError("cannot run:\n  " + "\n  ".join(desired.problems), advice="fix the Deployments named above")
        return desired

    def _prepare_state_dir(self) -> None:
        """istiod_lite's config directory: a link to each given file (so an edit to a file takes effect
        live, as with Kubernetes' `kubectl apply` of the same file); no state left from an earlier run."""
        if self.config_dir.exists():
            shutil.rmtree(self.config_dir)
        self.config_dir.mkdir(parents=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(f for given in self.options.files for f in yaml_files(Path(given))):
            (self.config_dir / f"{index:03d}-{path.name}").symlink_to(path.resolve())
        # Resources applied during an earlier run are not part of this one: `up` starts from its files.
        (self.state_dir / "applied.json").unlink(missing_ok=True)
        remove_status(self.state_dir)

    def _cleanup_state_dir(self) -> None:
        remove_status(self.state_dir)
        (self.state_dir / "pods.json").unlink(missing_ok=True)
        (self.state_dir / "applied.json").unlink(missing_ok=True)
        shutil.rmtree(self.config_dir, ignore_errors=True)

    async def _start_mesh(self, desired: DesiredState, nursery: trio.Nursery) -> None:
        self.report(f"capture mode: {self.capture} ({self.capture_reason})")
        self.report(f"mesh addresses: {self.block} (state directory {self.state_dir})")
        for plan in desired.pods.values():
            self._pod_ips[plan.key] = await self._allocate(plan.key, plan.namespace)
        self._pods = dict(desired.pods)
        for waypoint in desired.waypoints.values():
            self._waypoint_ips[waypoint.key] = await self._allocate(_waypoint_key(waypoint.key), waypoint.namespace)
        self._waypoints = dict(desired.waypoints)
        self._publish_inventory()
        await self._start_istiod()
        async with trio.open_nursery() as starting:
            for node in self.nodes:
                starting.start_soon(self._start_ztunnel, node)
        if self.networks is not None:
            await self.networks.run_agents(nursery)
        async with trio.open_nursery() as starting:
            for waypoint in desired.waypoints.values():
                starting.start_soon(self._start_waypoint, waypoint, nursery)
        async with trio.open_nursery() as starting:
            for plan in desired.pods.values():
                starting.start_soon(self._start_pod, plan, nursery)
        await self._wait_mesh_ready()
        self._report_where()

    async def _allocate(self, key: str, namespace: str) -> str:
        """A pod's address: its own loopback address (proxy mode) or its namespace's (netns mode)."""
        if self.networks is None:
            return self.addresses.allocate_pod()
        pod = await self.networks.add_pod(key, namespace)
        self._netns[key] = pod
        return pod.ip

    async def _release(self, key: str, ip: str) -> None:
        if self.networks is None:
            self.addresses.release_pod(ip)
            return
        self._netns.pop(key, None)
        await self.networks.remove_pod(key)

    async def _start_istiod(self) -> None:
        spec = istiod_spec(
            self.options.python, state_dir=self.state_dir, config_dir=self.config_dir, host=self.control_host,
            nodes=self.nodes,
        )
        self.status.proxies["istiod"] = ProxyStatus(kind="istiod", name="istiod", node="")
        process = await self._start(spec)
        addresses = process.ready_info.get("addresses", {})
        self.istiod_admin = str(addresses.get("admin", ""))
        self.istiod_control = str(addresses.get("control", ""))
        self.report(f"istiod_lite ready: admin http://{self.istiod_admin}  control {self.istiod_control}")

    async def _start_ztunnel(self, node: str) -> None:
        spec = ztunnel_spec(
            self.options.python, node=node, address=self.node_addresses[node], control=self.istiod_control,
            state_dir=self.state_dir, workers=self.options.ztunnel_workers,
            zds_socket=zds_socket(self.state_dir, node) if self.networks is not None else None,
        )
        name = spec.name
        self.status.proxies[name] = ProxyStatus(kind="ztunnel", name=name, node=node)
        await self._start(spec)
        proxy = self.status.proxies[name]
        self.report(f"ztunnel {node} ready at {self.node_addresses[node]}: metrics {proxy.metrics}")

    async def _start_waypoint(self, plan: WaypointPlan, nursery: trio.Nursery) -> None:
        """A waypoint process fed by istiod_lite like every proxy: once istiod_lite has translated its
        Gateway (its identity is in the published view and its token is written), it is started with
        ``--istiod``; in netns mode its HBONE side lives in its fabric namespace."""
        name = waypoint_name(plan.namespace, plan.name)
        identity = await self._waypoint_identity(plan.key)
        token = waypoint_token(self.state_dir, plan.namespace, plan.name)
        if identity is None or not await trio.Path(token).exists():
            problem = f"waypoint {plan.key}: istiod_lite translated no view for it in {WAYPOINT_VIEW_TIMEOUT:.0f}s"
            self.status.problems.append(problem)
            self.report(f"warning: {problem}")
            return
        if plan.key not in self._waypoints:  # its Gateway was deleted while we waited for the view
            return
        ip = self._waypoint_ips[plan.key]
        netns = self._netns.get(_waypoint_key(plan.key))
        admin_address = ip
        if netns is not None:  # the admin ports stay in the host namespace, on a loopback address of their own
            admin_address = self._waypoint_admin.setdefault(plan.key, self.addresses.allocate_pod())
        spec = waypoint_spec(
            self.options.python, namespace=plan.namespace, name=plan.name, address=ip, identity=identity,
            control=self.istiod_control, state_dir=self.state_dir, admin_address=admin_address,
            netns=netns.netns if netns is not None else None,
        )
        self.status.proxies[name] = ProxyStatus(kind="waypoint", name=name, node=plan.node,
                                                push_id=f"workload/{_identity_workload(identity)}")
        try:
            await self._start(spec)
        except ProcessFailed as exc:
            self.status.proxies[name].state = "failed"
            self.report(f"waypoint {plan.key} failed to start: {exc}")
            return
        proxy = self.status.proxies[name]
        self.report(f"waypoint {plan.key} ready at {ip} ({identity}): metrics {proxy.metrics}")

    async def _waypoint_identity(self, key: str) -> str | None:
        """The identity istiod_lite gave waypoint ``key`` in its published view (None until translated)."""
        host, _, port = self.istiod_admin.rpartition(":")
        for _ in range(int(WAYPOINT_VIEW_TIMEOUT / 0.2)):
            try:
                response = await http_request(host, int(port), "GET", "/debug/config_dump", timeout=5)
                body = (response.json().get("snapshot") or {}).get("waypoint", {}).get(key)
            except (AdminRequestFailed, ValueError, AttributeError):
                body = None
            if isinstance(body, dict) and isinstance(body.get("identity"), str):
                return str(body["identity"])
            await trio.sleep(0.2)
        return None

    async def _start_pod(self, plan: PodPlan, nursery: trio.Nursery) -> None:
        netns = self._netns.get(plan.key)
        captured = False
        if netns is not None and self.networks is not None:  # capture before the app starts, as CNI does
            captured = await self._wait_enrolled(plan.key)
            if captured:
                await self.networks.capture(plan.key, netns, node=plan.node, service_account=plan.service_account)
            self._listening.add(plan.key)
        spec, env = pod_spec(plan, self._pod_ips[plan.key], netns=netns.netns if netns is not None else None)
        status = PodStatus(
            namespace=plan.namespace,
            name=plan.name,
            deployment=plan.deployment,
            ip=self._pod_ips[plan.key],
            node=plan.node,
            identity=plan.identity,
            env=env,
            log=str(self.log_dir / f"{spec.name}.log"),
            netns=netns.netns if netns is not None else "",
            captured=captured,
        )
        self.status.pods[plan.key] = status
        try:
            await self._start(spec)
        except ProcessFailed as exc:
            status.state = "failed"
            self.report(f"pod {plan.key} failed to start: {exc}")
            self._write_status()
            return
        if netns is None:
            nursery.start_soon(self._watch_mesh_listener, plan.key, status.ip)

    async def _wait_enrolled(self, key: str) -> bool:
        """Whether istiod_lite puts pod ``key`` in the mesh; asked until it knows the pod (bounded)."""
        for _ in range(int(ENROLLMENT_TIMEOUT / 0.1)):
            enrolled = await self._enrolled(key)
            if enrolled is not None:
                return enrolled
            await trio.sleep(0.1)
        self.report(f"warning: istiod_lite did not place pod {key} within {ENROLLMENT_TIMEOUT:.0f}s; "
                    "starting it without capture")
        return False

    async def _start(self, spec: ProcessSpec) -> SupervisedProcess:
        assert self._supervisor is not None
        return await self._supervisor.start(spec)

    async def _watch_mesh_listener(self, key: str, ip: str) -> None:
        """A captured pod is ready once its process is and its ztunnel listens on ``podIP:15080``; a pod
        istiod_lite did not enroll (no ``istio.io/dataplane-mode: ambient``) once its process is."""
        last_lookup = -1.0
        while key in self.status.pods and self.status.pods[key].ip == ip:
            captured: bool | None = None
            if await _accepts(ip, EXPLICIT_PROXY_PORT):
                captured = True
            elif trio.current_time() - last_lookup >= 1.0:
                last_lookup = trio.current_time()
                if await self._enrolled(key) is False:
                    captured = False
            if captured is None:
                await trio.sleep(0.1)
                continue
            self._listening.add(key)
            pod = self.status.pods.get(key)
            if pod is not None:
                pod.captured = captured
                pod.ready = pod.state == "ready"
                self._write_status()
            return

    async def _enrolled(self, key: str) -> bool | None:
        """Whether istiod_lite put pod ``key`` in the mesh (HBONE), from its config dump; None: not yet known."""
        host, _, port = self.istiod_admin.rpartition(":")
        try:
            response = await http_request(host, int(port), "GET", "/debug/config_dump", timeout=5)
            workloads = response.json().get("snapshot", {}).get("workload", {})
        except (AdminRequestFailed, ValueError, AttributeError):
            return None
        workload = workloads.get(f"Kubernetes//Pod/{key}") if isinstance(workloads, dict) else None
        if not isinstance(workload, dict):
            return None
        return bool(workload.get("tunnel_protocol", "HBONE") == "HBONE")

    async def _wait_mesh_ready(self) -> None:
        with trio.move_on_after(MESH_READY_TIMEOUT):
            while not all(pod.ready or pod.state == "failed" for pod in self.status.pods.values()):
                await self._status_changed.wait()
        waiting = sorted(key for key, pod in self.status.pods.items() if not pod.ready)
        if waiting:
            problem = (
                f"pods without a mesh listener on podIP:{EXPLICIT_PROXY_PORT} after {MESH_READY_TIMEOUT:.0f}s: "
                f"{', '.join(waiting)} (does istiod_lite publish the addresses in {self.state_dir / 'pods.json'}?)"
            )
            self.status.problems.append(problem)
            self.report(f"warning: {problem}")

    def _report_where(self) -> None:
        ready = sum(1 for pod in self.status.pods.values() if pod.ready)
        self.report(f"istiod_lite admin: http://{self.istiod_admin}  (metrics /metrics, config /debug/config_dump)")
        for pod in sorted(self.status.pods.values(), key=lambda p: (p.namespace, p.name)):
            state = "ready" if pod.ready else pod.state
            mesh = pod.identity if pod.captured else "not in the mesh: no istio.io/dataplane-mode=ambient label"
            self.report(f"pod {pod.namespace}/{pod.name} {state} at {pod.ip} on {pod.node} ({mesh})")
        self.report(
            f"mesh is up: {len(self.nodes)} nodes, {ready}/{len(self.status.pods)} pods ready; "
            f"`meshctl status` shows it, Ctrl-C stops it"
        )

    # ------------------------------------------------------------------------------------ events

    def _on_event(self, name: str, event: str, details: Mapping[str, Any]) -> None:
        entry = self._entry(name)
        if entry is None:
            return
        entry.state = event
        entry.pid = details.get("pid") if event in ("started", "ready") else None
        if event == "restarting":
            entry.restarts = int(details.get("restarts", entry.restarts))
            self.report(f"{name} exited with {details.get('code')}; restarting in {details.get('delay')}s")
        if isinstance(entry, ProxyStatus):
            entry.ready = event == "ready"
            if event == "ready":  # where it really bound (reported in its ready line)
                addresses = {str(k): str(v) for k, v in details.get("addresses", {}).items()}
                entry.addresses = addresses
                entry.admin = f"http://{addresses.get('admin', '')}"
                entry.metrics = f"http://{addresses.get('metrics', addresses.get('admin', ''))}/metrics"
        else:  # a pod is ready when its process is and its mesh listener was seen
            entry.ready = event == "ready" and f"{entry.namespace}/{entry.name}" in self._listening
        if event == "exited":
            self.report(f"{name} exited with {details.get('code')}")
        self._write_status()

    def _entry(self, name: str) -> PodStatus | ProxyStatus | None:
        if name in self.status.proxies:
            return self.status.proxies[name]
        for key, pod in self.status.pods.items():
            if name == pod_name(pod.namespace, pod.name):
                return self.status.pods[key]
        return None

    def _write_status(self) -> None:
        write_status(self.state_dir, self.status)
        self._status_changed.set()
        self._status_changed = trio.Event()

    def _publish_inventory(self) -> None:
        records = [
            PodRecord(
                name=plan.name,
                namespace=plan.namespace,
                ip=self._pod_ips[key],
                node=plan.node,
                labels=plan.labels,
                service_account=plan.service_account,
                deployment=plan.deployment,
                container_ports=plan.container_ports,
            )
            for key, plan in self._pods.items()
        ]
        records += [
            PodRecord(
                name=f"{plan.name}-0",
                namespace=plan.namespace,
                ip=self._waypoint_ips[key],
                # No node: a ztunnel would otherwise bind podIP:15008 for it as for a captured pod, but a
                # waypoint terminates HBONE itself (Istio never captures waypoint pods).
                node="",
                labels={GATEWAY_NAME_LABEL: plan.name, "gateway.istio.io/managed": "istio.io-mesh-controller"},
                service_account=plan.name,
                deployment=plan.name,
                container_ports=((None, 15008),),
                kind="waypoint",
            )
            for key, plan in self._waypoints.items()
        ]
        write_inventory(self.state_dir, records)

    # ------------------------------------------------------------------------------------ live changes

    async def _follow_resources(self) -> None:
        """Poll istiod_lite's resources (files + `meshctl apply`) and bring the pods in step."""
        host, _, port = self.istiod_admin.rpartition(":")
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(RECONCILE_INTERVAL)
                try:
                    response = await http_request(host, int(port), "GET", "/apis/resources?output=yaml", timeout=5)
                except AdminRequestFailed:
                    continue  # istiod_lite restarting: its supervisor reports that
                if response.status != 200:
                    continue
                text = response.text()
                digest = hashlib.sha256(text.encode()).hexdigest()
                if digest == self._resources_digest:
                    continue
                self._resources_digest = digest
                await self._reconcile(load_text(text, "istiod_lite").resources, nursery)

    async def _reconcile(self, resources: Sequence[object], nursery: trio.Nursery) -> None:
        desired = desired_state(resources, self.nodes)
        for problem in desired.problems:
            if problem not in self.status.problems:
                self.status.problems.append(problem)
                self.report(f"warning: {problem}")
        changes = diff_pods(self._pods, desired.pods)
        added = [w for key, w in desired.waypoints.items() if key not in self._waypoints]
        removed = [key for key in self._waypoints if key not in desired.waypoints]
        if not (changes.start or changes.stop or added or removed):
            return
        async with trio.open_nursery() as stopping:
            for key in changes.stop:
                stopping.start_soon(self._stop_pod, key)
            for key in removed:
                stopping.start_soon(self._stop_waypoint, key)
        for key in changes.stop:
            self._pods.pop(key, None)
            await self._release(key, self._pod_ips.pop(key))
        for key in removed:
            self._waypoints.pop(key, None)
            await self._release(_waypoint_key(key), self._waypoint_ips.pop(key))
        for plan in changes.start:
            self._pod_ips[plan.key] = await self._allocate(plan.key, plan.namespace)
            self._pods[plan.key] = plan
        for waypoint in added:
            self._waypoint_ips[waypoint.key] = await self._allocate(_waypoint_key(waypoint.key), waypoint.namespace)
            self._waypoints[waypoint.key] = waypoint
        self._publish_inventory()
        self._write_status()
        for waypoint in added:
            self.report(f"starting waypoint {waypoint.key} (Gateway of class istio-waypoint)")
            nursery.start_soon(self._start_waypoint, waypoint, nursery)
        for plan in changes.start:
            self.report(f"starting pod {plan.key} (deployment {plan.namespace}/{plan.deployment})")
            nursery.start_soon(self._start_pod, plan, nursery)

    async def _stop_waypoint(self, key: str) -> None:
        admin = self._waypoint_admin.pop(key, None)
        if admin is not None:
            self.addresses.release_pod(admin)
        plan = self._waypoints[key]
        name = waypoint_name(plan.namespace, plan.name)
        self.status.proxies.pop(name, None)
        assert self._supervisor is not None
        await self._supervisor.stop(name)
        self.report(f"stopped waypoint {key}")

    async def _stop_pod(self, key: str) -> None:
        pod = self.status.pods.pop(key, None)
        self._listening.discard(key)
        assert self._supervisor is not None
        if pod is not None:
            await self._supervisor.stop(pod_name(pod.namespace, pod.name))
            self.report(f"stopped pod {key}")

    # ------------------------------------------------------------------------------------ shutdown

    async def _drain(self) -> None:
        """Pods first (their traffic still has proxies), then the ztunnels, then the control plane."""
        supervisor = self._supervisor
        if supervisor is None:
            return
        self.report("stopping: draining pods, then proxies, then istiod_lite")
        pods = [name for name in supervisor.processes if name.startswith("pod-")]
        proxies = [name for name in supervisor.processes if name.startswith(("ztunnel-", "waypoint-"))]
        for group in (pods, proxies, ["istiod"]):
            async with trio.open_nursery() as stopping:
                for name in group:
                    stopping.start_soon(supervisor.stop, name)
        self.report("mesh stopped; every process it started has exited")


def _identity_workload(identity: str) -> str:
    """``spiffe://td/ns/NS/sa/SA`` → ``NS/SA`` (how istiod_lite names a waypoint's push connection)."""
    parts = identity.removeprefix("spiffe://").split("/")
    return f"{parts[2]}/{parts[4]}" if len(parts) == 5 else identity


def _waypoint_key(key: str) -> str:
    """The fabric's name for a waypoint's namespace, apart from pods of the same name."""
    return f"waypoint/{key}"


async def _accepts(host: str, port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True
