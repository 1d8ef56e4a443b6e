"""How each part of a local mesh is started: the command line of every process `meshctl up` runs.

Pure functions from "what" (a node, a pod plan, an address) to a :class:`ProcessSpec`, so the flags
the runner passes to istiod_lite, ztunnel, the waypoint and the pods can be read and tested in one
place. Mesh components are ready when they print their ready line; a pod with a declared container
port when that port accepts connections on its own address; any other pod as soon as it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from meshctl.runner.pods import PodIdentity, pod_command, proxy_env
from meshctl.runner.supervisor import ProcessSpec, ReadyLine, Started, TcpProbe
from meshctl.runner.workloads import PodPlan

EXPLICIT_PROXY_PORT = 15080
COMPONENT_START_TIMEOUT = 60.0  # first start includes key generation and the first push


def istiod_spec(python: str, *, state_dir: Path, config_dir: Path, host: str, nodes: Sequence[str]) -> ProcessSpec:
    """istiod_lite on the mesh's control-plane address (both ports), with a token per node."""
    return ProcessSpec(
        name="istiod",
        argv=[
            python, "-m", "istiod_lite",
            "--state-dir", str(state_dir),
            "--config-dir", str(config_dir),
            "--host", host,
            "--admin-host", host,
            "--nodes", ",".join(nodes),
        ],
        readiness=ReadyLine(),
        start_timeout=COMPONENT_START_TIMEOUT,
    )


def ztunnel_name(node: str) -> str:
    return f"ztunnel-{node}"


def ztunnel_spec(
    python: str, *, node: str, address: str, control: str, state_dir: Path, workers: int = 1,
    zds_socket: Path | None = None,
) -> ProcessSpec:
    """One node's ztunnel, fed by istiod_lite's push with the token istiod_lite wrote for that node;
    ``workers`` > 1 spreads it over that many processes (``python -m ztunnel --workers``)."""
    return ProcessSpec(
        name=ztunnel_name(node),
        argv=[
            python, "-m", "ztunnel",
            "--node", node,
            "--node-address", address,
            "--istiod", f"wss://{control}/v1/xds",
            "--token-file", str(state_dir / "tokens" / f"{node}.token"),
            "--root-cert", str(state_dir / "root-cert.pem"),
            *(["--workers", str(workers)] if workers > 1 else []),
            *(["--capture", "netns", "--zds-socket", str(zds_socket)] if zds_socket is not None else []),
        ],
        readiness=ReadyLine(),
        start_timeout=COMPONENT_START_TIMEOUT,
    )


def waypoint_name(namespace: str, name: str) -> str:
    return f"waypoint-{namespace}-{name}"


def waypoint_token(state_dir: Path, namespace: str, name: str) -> Path:
    """Where istiod_lite writes the waypoint's own token once it translated its Gateway."""
    return state_dir / "tokens" / f"waypoint-{namespace}-{name}.token"


def waypoint_spec(
    python: str, *, namespace: str, name: str, address: str, identity: str, control: str, state_dir: Path,
    admin_address: str, netns: str | None = None,
) -> ProcessSpec:
    """A waypoint fed by istiod_lite like any proxy: its certificate from the CA with its own token, its
    routes by push. In netns mode its HBONE side lives in a fabric namespace (``--netns``) while the
    process — control plane and admin ports — stays in the host's, so meshctl can still reach it."""
    return ProcessSpec(
        name=waypoint_name(namespace, name),
        argv=[
            python, "-m", "waypoint",
            "--address", address,
            "--admin-address", admin_address,
            "--identity", identity,
            "--istiod", f"wss://{control}/v1/xds",
            "--token-file", str(waypoint_token(state_dir, namespace, name)),
            "--root-cert", str(state_dir / "root-cert.pem"),
            *(["--netns", netns] if netns is not None else []),
        ],
        readiness=ReadyLine(),
        start_timeout=COMPONENT_START_TIMEOUT,
    )


def pod_name(namespace: str, name: str) -> str:
    return f"pod-{namespace}-{name}"


def pod_spec(plan: PodPlan, ip: str, *, netns: str | None = None) -> tuple[ProcessSpec, dict[str, str]]:
    """A pod's process and its environment (downward variables, container env; in proxy mode the proxy
    variables, in netns mode none: the pod's namespace captures its traffic)."""
    identity = PodIdentity(
        name=plan.name, namespace=plan.namespace, ip=ip, node=plan.node, service_account=plan.service_account
    )
    extra = {} if netns is not None else proxy_env(ip, EXPLICIT_PROXY_PORT)
    argv, env = pod_command(plan.command, plan.args, plan.env, identity, extra_env=extra)
    readiness = TcpProbe(ip, plan.container_ports[0][1], netns) if plan.container_ports else Started()
    spec = ProcessSpec(name=pod_name(plan.namespace, plan.name), argv=argv, env=env, readiness=readiness, netns=netns)
    return spec, env
