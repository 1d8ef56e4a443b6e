"""The local-runner verbs: `up`, `status`, `exec`, `logs` and `demo`.

``register(cli)`` adds them to the top-level group. `up` (and `demo`) stay in the foreground; the
others read ``<state>/status.json``, which a running `up` keeps current, so they work from any shell.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import trio

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.errors import MeshError
from meshctl.control_plane import DEFAULT_STATE_DIR
from meshctl.runner.state import merge_push_status, pods_of, read_status
from meshctl.runner.up import MeshRunner, UpOptions

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the mesh keeps its state (CA, tokens, logs, status).",
)


T = TypeVar("T")


def _fail(exc: MeshError) -> NoReturn:
    click.echo(f"meshctl: {exc}", err=True)
    raise SystemExit(1)


def _echo(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


async def run_until_signal(runner: MeshRunner) -> None:
    """Run the mesh in the foreground until SIGINT (Ctrl-C) or SIGTERM, then drain it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def stop_on_signal() -> None:
            async for _ in signals:
                runner.request_stop()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            await nursery.start(runner.run)
            await runner.finished.wait()
            nursery.cancel_scope.cancel()


def run_reporting_errors(function: Callable[[], Awaitable[T]]) -> T:
    """``trio.run`` with every :class:`MeshError` (even inside exception groups) shown as a clear line."""
    try:
        return trio.run(function)
    except MeshError as exc:
        _fail(exc)
    except BaseExceptionGroup as group:
        matched, rest = group.split(MeshError)
        if rest is not None or matched is None:
            raise
        for leaf in _leaves(matched):
            click.echo(f"meshctl: {leaf}", err=True)
        raise SystemExit(1) from None
    raise AssertionError("unreachable")


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


@click.command()
@click.option("-f", "--filename", "files", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True), help="A manifest file or directory (repeatable).")
@click.option("--nodes", default=2, show_default=True, help="How many local nodes (one ztunnel each).")
@click.option("--capture", type=click.Choice(["auto", "proxy", "netns"]), default="auto", show_default=True,
              help="How pod traffic reaches the mesh: netns (pods in network namespaces, in-pod redirection; "
                   "needs root and iptables), proxy (explicit proxy variables), auto (netns when possible).")
@click.option("--ztunnel-workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Processes per node ztunnel (one core each; they share the pod ports).")
@state_dir_option
def up(files: tuple[Path, ...], nodes: int, capture: str, ztunnel_workers: int, state_dir: Path) -> None:
    """Run a mesh on this machine from ordinary Kubernetes manifests, in the foreground."""
    try:
        options = UpOptions(files=files, state_dir=state_dir, nodes=nodes, capture=capture,
                            ztunnel_workers=ztunnel_workers)
        runner = MeshRunner(options, _echo)
    except MeshError as exc:
        _fail(exc)
    run_reporting_errors(functools.partial(run_until_signal, runner))


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)


def _public(document: dict[str, Any]) -> dict[str, Any]:
    """The status document without each pod's full environment (that is for `exec`)."""
    pods = [{k: v for k, v in pod.items() if k != "env"} for pod in document.get("pods", [])]
    return {**document, "pods": pods}


async def _proxy_status(document: dict[str, Any]) -> dict[str, Any] | None:
    """istiod_lite's view of each proxy's push state, or None when it does not answer."""
    admin = next((p["admin"] for p in document.get("proxies", []) if p.get("kind") == "istiod"), "")
    host, _, port = admin.removeprefix("http://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        response = await http_request(host, int(port), "GET", "/debug/proxy-status", timeout=5)
        answer = response.json()
    except (AdminRequestFailed, ValueError):
        return None
    return answer if isinstance(answer, dict) and response.status == 200 else None


@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_dir_option
def status(output: str, state_dir: Path) -> None:
    """What the running mesh consists of: nodes, proxies, pods and their readiness."""
    try:
        document = read_status(state_dir)
    except MeshError as exc:
        _fail(exc)
    document = merge_push_status(document, trio.run(_proxy_status, document))
    if output == "json":
        click.echo(json.dumps(_public(document), indent=2))
        return
    click.echo(f"capture mode: {document['capture']}   runner pid: {document['runner_pid']}")
    click.echo(_table([["NODE", "ADDRESS"], *([n["name"], n["address"]] for n in document["nodes"])]))
    click.echo()
    proxies = [["PROXY", "KIND", "NODE", "READY", "RESTARTS", "PUSH", "ADMIN", "METRICS"]]
    for p in document["proxies"]:
        proxies.append([p["name"], p["kind"], p["node"] or "-", str(p["ready"]).lower(), str(p["restarts"]),
                        p.get("sync", "-"), p["admin"], p["metrics"]])
    click.echo(_table(proxies))
    click.echo()
    pods = [["NAMESPACE", "POD", "DEPLOYMENT", "IP", "NODE", "READY", "RESTARTS", "IDENTITY"]]
    for pod in document["pods"]:
        pods.append([pod["namespace"], pod["name"], pod["deployment"], pod["ip"], pod["node"],
                     str(pod["ready"]).lower(), str(pod["restarts"]), pod["identity"]])
    click.echo(_table(pods))
    for problem in document.get("problems", []):
        click.echo(f"warning: {problem}")


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("-n", "--namespace", default="default", show_default=True)
@click.argument("deployment")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@state_dir_option
def exec_(namespace: str, deployment: str, command: tuple[str, ...], state_dir: Path) -> None:
    """Run COMMAND as if inside a pod of DEPLOYMENT: in its network namespace (netns mode) or with its
    address and proxy settings (proxy mode)."""
    try:
        pod = pods_of(read_status(state_dir), namespace, deployment)[0]
    except MeshError as exc:
        _fail(exc)
    env = {**os.environ, **pod["env"]}
    if pod.get("netns"):  # netns mode: inside the pod's namespace, with its resolv.conf view
        command = ("ip", "netns", "exec", str(pod["netns"]), *command)
    try:
        os.execvpe(command[0], list(command), env)
    except OSError as exc:
        click.echo(f"meshctl: cannot run {command[0]!r}: {exc.strerror} (is it installed and on PATH?)", err=True)
        raise SystemExit(127) from None


@click.command()
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("--tail", type=int, default=None, help="Only the last N lines of each pod's log.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until Ctrl-C or the mesh stops.")
@click.argument("deployment")
@state_dir_option
def logs(namespace: str, tail: int | None, follow: bool, deployment: str, state_dir: Path) -> None:
    """Print the output of every pod of DEPLOYMENT (each line prefixed with its pod)."""
    try:
        pods = pods_of(read_status(state_dir), namespace, deployment)
    except MeshError as exc:
        _fail(exc)
    offsets: dict[str, int] = {}
    for pod in sorted(pods, key=lambda p: p["name"]):
        try:
            data = Path(pod["log"]).read_bytes()
        except OSError as exc:
            click.echo(f"meshctl: cannot read {pod['log']}: {exc.strerror}", err=True)
            continue
        offsets[pod["log"]] = len(data)
        lines = data.decode(errors="replace").splitlines()
        for line in lines[-tail:] if tail else lines:
            click.echo(f"[{pod['name']}] {line}")
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _follow_logs(pods, offsets, state_dir)


def _follow_logs(pods: list[dict[str, Any]], offsets: dict[str, int], state_dir: Path) -> None:
    """Print what the pods write next; ends on Ctrl-C or when the mesh stops (its status file goes)."""
    while (state_dir / "status.json").exists():
        for pod in pods:
            try:
                with Path(pod["log"]).open("rb") as handle:
                    handle.seek(offsets.get(pod["log"], 0))
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only; the rest next time
            offsets[pod["log"]] = offsets.get(pod["log"], 0) + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                click.echo(f"[{pod['name']}] {line}")
        time.sleep(0.3)


@click.command()
@click.option("--duration", type=float, default=40.0, show_default=True,
              help="Seconds of traffic: the canary split, v2 failing, then the rollback.")
@click.option("--nodes", default=2, show_default=True)
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), default=Path(".mesh/demo"),
              show_default=True, help="The demo mesh's own state directory.")
def demo(duration: float, nodes: int, state_dir: Path) -> None:
    """The canary story on a live mesh: a 95/5 split, v2 failing, the rollback — from the mesh's metrics."""
    from meshctl.demo import run_demo

    code = run_reporting_errors(functools.partial(run_demo, state_dir=state_dir, duration=duration, nodes=nodes))
    raise SystemExit(code)


COMMANDS: tuple[click.Command, ...] = (up, status, exec_, logs, demo)


def register(group: click.Group) -> None:
    for command in COMMANDS:
        group.add_command(command)
