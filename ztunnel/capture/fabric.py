"""The local network fabric of netns mode: one bridge, one network namespace per pod.

Layout (all names under the mesh prefix, see :mod:`ztunnel.capture.names`)::

    netns <prefix>-fabric:  bridge <prefix>-br  (gateway address, e.g. 198.18.0.1/16)
                               ├── <prefix>v0  ⇄  eth0 in netns <prefix>-pod-a   198.18.0.2/16
                               └── <prefix>v1  ⇄  eth0 in netns <prefix>-pod-b   198.18.0.3/16

The bridge lives in a namespace of its own, and each veth is created *inside* that namespace with its
peer placed straight into the pod's namespace, so nothing ever appears in — or is routed from — the
host's root namespace. Addresses come from 198.18.0.0/15 (benchmarking space, never on the internet).

Crash safety: every object is written to a JSON state file *before* it is created, so after a SIGKILL
the next start calls :func:`cleanup_from_state` (:mod:`ztunnel.capture.fabric_state`) and removes
exactly what was recorded (deleting a pod namespace also removes its veth pair and its in-pod rules;
deleting the fabric namespace removes the bridge).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from ztunnel.capture import names
from ztunnel.capture.commands import run_command
from ztunnel.capture.errors import FabricError
from ztunnel.capture.fabric_state import (
    ETC_NETNS_DIR,
    FabricState,
    PodNetwork,
    cleanup_from_state,
    cleanup_from_state_sync,
    existing_netns,
    netns_exists,
    remove_etc_view,
)

ALLOWED_SPACE = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_SUBNET = "198.18.0.0/16"

__all__ = ["Fabric", "PodNetwork", "cleanup_from_state", "cleanup_from_state_sync", "existing_netns"]


def _validated_subnet(subnet: str) -> ipaddress.IPv4Network:
    net = ipaddress.IPv4Network(subnet, strict=True)
    if not net.subnet_of(ALLOWED_SPACE) or net.num_addresses < 4:
        raise FabricError(
            f"fabric subnet {subnet} is not inside {ALLOWED_SPACE}",
            detail=f"pick a subnet of {ALLOWED_SPACE} with room for a gateway and pods",
        )
    return net


class Fabric:
    """Creates and removes the bridge and the pods' namespaces, recording each step first."""

    def __init__(self, state_path: Path, *, prefix: str | None = None, subnet: str = DEFAULT_SUBNET) -> None:
        net = _validated_subnet(subnet)
        self._net = net
        self._state_path = state_path
        prefix = names.check_prefix(prefix) if prefix is not None else names.new_prefix()
        self._state = FabricState(
            prefix=prefix,
            subnet=str(net),
            fabric_netns=names.fabric_netns(prefix),
            bridge=names.bridge(prefix),
            gateway=str(net.network_address + 1),
        )
        self._created = False

    @property
    def prefix(self) -> str:
        """The per-mesh name prefix."""
        return self._state.prefix

    @property
    def fabric_netns(self) -> str:
        """Name of the namespace holding the bridge."""
        return self._state.fabric_netns

    @property
    def bridge(self) -> str:
        """Name of the bridge device (inside :attr:`fabric_netns`)."""
        return self._state.bridge

    @property
    def gateway(self) -> str:
        """The bridge's own address, the pods' default route."""
        return self._state.gateway

    @property
    def pods(self) -> dict[str, PodNetwork]:
        """The pods currently on the fabric, by name."""
        return dict(self._state.pods)

    async def _save(self) -> None:
        await trio.to_thread.run_sync(self._state.save, self._state_path)

    async def _ip(self, *args: str) -> None:
        await run_command(["ip", *args])

    async def create(self) -> None:
        """Create the fabric namespace and its bridge (refuses to overwrite a live state file)."""
        if self._created:
            raise FabricError("fabric already created", detail="call create() once per Fabric")
        if await trio.Path(self._state_path).exists():
            raise FabricError(
                f"state file {self._state_path} already exists",
                detail="a previous run left it; call cleanup_from_state() on it first",
            )
        await self._save()
        self._created = True
        ns, br = self.fabric_netns, self.bridge
        await self._ip("netns", "add", ns)
        await self._ip("-n", ns, "link", "set", "lo", "up")
        await self._ip("-n", ns, "link", "add", br, "type", "bridge")
        await self._ip("-n", ns, "addr", "add", f"{self.gateway}/{self._net.prefixlen}", "dev", br)
        await self._ip("-n", ns, "link", "set", br, "up")

    def _allocate(self, ip: str | None) -> tuple[str, int]:
        used_ips = {pod.ip for pod in self._state.pods.values()} | {self.gateway}
        used_idx = {pod.veth_index for pod in self._state.pods.values()}
        index = next(i for i in range(names.MAX_VETH_INDEX + 1) if i not in used_idx)
        if ip is not None:
            addr = ipaddress.IPv4Address(ip)
            if addr not in self._net or addr in (self._net.network_address, self._net.broadcast_address):
                raise FabricError(
                    f"pod address {ip} is not a host address of {self._net}", detail="pick one inside it"
                )
            if ip in used_ips:
                raise FabricError(
                    f"pod address {ip} is already in use", detail="each pod needs its own address"
                )
            return ip, index
        for host in self._net.hosts():
            if str(host) not in used_ips:
                return str(host), index
        raise FabricError(f"no free address left in {self._net}", detail="use a larger fabric subnet")

    async def create_pod(self, name: str, *, ip: str | None = None) -> PodNetwork:
        """Create pod ``name``'s namespace, wire it to the bridge and return where it sits."""
        if not self._created:
            raise FabricError("fabric not created", detail="call await fabric.create() first")
        if name in self._state.pods:
            raise FabricError(f"pod {name!r} already exists on the fabric", detail="delete it first")
        address, index = self._allocate(ip)
        pod = PodNetwork(
            name=name,
            netns=names.pod_netns(self.prefix, name),
            ip=address,
            prefix_len=self._net.prefixlen,
            host_veth=names.host_veth(self.prefix, index),
            veth_index=index,
        )
        self._state.pods[name] = pod
        await self._save()
        try:
            await self._wire_pod(pod)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.delete_pod(name)
            raise
        return pod

    async def _wire_pod(self, pod: PodNetwork) -> None:
        fab, ns = self.fabric_netns, pod.netns
        await self._ip("netns", "add", ns)
        await self._ip("-n", ns, "link", "set", "lo", "up")
        await self._ip(
            "-n", fab, "link", "add", pod.host_veth, "type", "veth", "peer", "name", "eth0", "netns", ns
        )
        await self._ip("-n", fab, "link", "set", pod.host_veth, "master", self.bridge, "up")
        await self._ip("-n", ns, "addr", "add", f"{pod.ip}/{pod.prefix_len}", "dev", "eth0")
        await self._ip("-n", ns, "link", "set", "eth0", "up")
        await self._ip("-n", ns, "route", "add", "default", "via", self.gateway, "dev", "eth0")

    async def write_resolv_conf(
        self, name: str, *, search: Sequence[str] = (), nameserver: str | None = None
    ) -> Path:
        """Give the pod its own resolv.conf view (``ip netns exec`` mounts ``/etc/netns/NS/resolv.conf``).

        The nameserver defaults to the bridge address: the in-pod rules redirect UDP 53 to ztunnel's
        15053 whatever the address, and without capture a query fails fast instead of leaving the host.
        """
        pod = self._pod(name)
        lines = [f"nameserver {nameserver or self.gateway}"]
        if search:
            lines.append("search " + " ".join(search))
        lines.append("options ndots:5")
        view = ETC_NETNS_DIR / names.assert_ours(self.prefix, pod.netns)
        path = view / "resolv.conf"

        def write() -> None:
            view.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(lines) + "\n")

        await trio.to_thread.run_sync(write)
        return path

    def _pod(self, name: str) -> PodNetwork:
        pod = self._state.pods.get(name)
        if pod is None:
            raise FabricError(
                f"no pod {name!r} on the fabric", detail=f"known pods: {sorted(self._state.pods)}"
            )
        return pod

    async def delete_pod(self, name: str) -> None:
        """Remove the pod's namespace (its veth pair and in-pod rules go with it)."""
        pod = self._pod(name)
        if await trio.to_thread.run_sync(netns_exists, pod.netns):
            await self._ip("netns", "delete", pod.netns)
        await trio.to_thread.run_sync(remove_etc_view, attrs.evolve(self._state, pods={name: pod}))
        del self._state.pods[name]
        await self._save()

    async def destroy(self) -> None:
        """Remove every pod, the bridge and its namespace, and the state file."""
        if not self._created:
            return
        await cleanup_from_state(self._state_path)
        self._state.pods.clear()
        self._created = False

    def destroy_sync(self) -> None:
        """Blocking :meth:`destroy` for shutdown paths where trio is no longer running."""
        if self._created:
            cleanup_from_state_sync(self._state_path)
            self._state.pods.clear()
            self._created = False
