"""`meshctl demo`: the canary story on a live local mesh, told with the mesh's own metrics.

It runs `meshctl up` in-process on a built-in example — namespace ``prod`` enrolled with a waypoint,
``search-service`` v1 and v2 behind the ``search-api`` Service, a VirtualService sending 95/5 to the
v1/v2 subsets, and a load-generator pod — and then plays three acts on a timer: the split, v2 failing
(its app is told to answer 503), and the rollback (the VirtualService re-applied at 100/0 through
istiod_lite's admin API, as an operator would). Every figure on screen — requests/s, share, error
rate, p50/p99 per version — is computed from the waypoint's ``/metrics`` scrape
(:mod:`meshctl.demo_metrics`); the load generator's own counts are never used. It ends by itself,
prints a summary and drains the mesh.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import attrs
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from meshcore.admin.client import AdminRequestFailed, http_request
from meshcore.errors import MeshError
from meshctl.control_plane import ControlPlaneClient, find_admin
from meshctl.demo_metrics import VersionRow, VersionTotals, parse_exposition, totals_by_version, window
from meshctl.runner.state import MeshStatus
from meshctl.runner.up import MeshRunner, UpOptions

NAMESPACE = "prod"
HOST = "search-api.prod.svc.cluster.local"
APP_PORT = 8080
SCRAPE_INTERVAL = 1.0
RATE_WINDOW = 3.0  # seconds of scrapes a live row averages over
LOAD_RPS = 40


class DemoError(MeshError):
    hint = "{advice}"


def virtual_service(v1: int, v2: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: search-canary
  namespace: {NAMESPACE}
spec:
  hosts:
  - {HOST}
  http:
  - route:
    - destination:
        host: {HOST}
        subset: v1
      weight: {v1}
    - destination:
        host: {HOST}
        subset: v2
      weight: {v2}
"""


def _backend(version: str, python: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: search-service-{version}
  namespace: {NAMESPACE}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: search-service, version: {version}}}
  template:
    metadata:
      labels: {{app: search-service, version: {version}}}
    spec:
      serviceAccountName: search-service
      containers:
      - name: app
        command: ["{python}", "-m", "meshctl.runner.demo_app", "--version", "{version}"]
        args: ["--host", "$(POD_IP)", "--port", "{APP_PORT}"]
        ports:
        - containerPort: {APP_PORT}
          name: http
"""


def demo_manifests(python: str = sys.executable) -> str:
    """The whole example as one multi-document YAML (the same a user could `meshctl up -f`)."""
    head = f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: {NAMESPACE}
  labels:
    istio.io/waypoint-for: service
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: search-service
  namespace: {NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: loadgen
  namespace: {NAMESPACE}
---
apiVersion: v1
kind: Service
metadata:
  name: search-api
  namespace: {NAMESPACE}
spec:
  selector:
    app: search-service
  ports:
  - name: http
    port: {APP_PORT}
    targetPort: {APP_PORT}
    appProtocol: http
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: search-service
  namespace: {NAMESPACE}
spec:
  host: {HOST}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: loadgen
  namespace: {NAMESPACE}
spec:
  selector:
    matchLabels: {{app: loadgen}}
  template:
    metadata:
      labels: {{app: loadgen}}
    spec:
      serviceAccountName: loadgen
      containers:
      - name: loadgen
        command: ["{python}", "-m", "meshctl.runner.demo_load"]
        args: ["--url", "http://{HOST}:{APP_PORT}/", "--rps", "{LOAD_RPS}"]
"""
    return "---\n".join([head, _backend("v1", python), _backend("v2", python), virtual_service(95, 5)])


@attrs.frozen
class Act:
    title: str
    weights: tuple[int, int]
    starts_at: float  # fraction of the duration


ACTS = (
    Act("canary: 95% v1, 5% v2", (95, 5), 0.0),
    Act("v2 starts failing", (95, 5), 0.45),
    Act("rolled back: 100% v1", (100, 0), 0.7),
)


@attrs.define
class Story:
    """The scrapes taken so far and the totals at each act's start (for the summary)."""

    scrapes: deque[tuple[float, dict[str, VersionTotals]]] = attrs.field(factory=lambda: deque(maxlen=64))
    act_starts: list[dict[str, VersionTotals]] = attrs.field(factory=list)
    act_times: list[float] = attrs.field(factory=list)

    def live_rows(self) -> list[VersionRow]:
        if len(self.scrapes) < 2:
            return []
        now_t, now = self.scrapes[-1]
        then_t, then = self.scrapes[0]
        for t, totals in self.scrapes:
            if now_t - t <= RATE_WINDOW:
                then_t, then = t, totals
                break
        return window(then, now, now_t - then_t)

    def act_rows(self, index: int) -> list[VersionRow]:
        start, start_t = self.act_starts[index], self.act_times[index]
        if index + 1 < len(self.act_starts):
            end, end_t = self.act_starts[index + 1], self.act_times[index + 1]
        else:
            end_t, end = self.scrapes[-1]
        return window(start, end, end_t - start_t)


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def rows_table(title: str, rows: Sequence[VersionRow]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("version", "requests/s", "share", "error rate", "p50", "p99", "requests"):
        table.add_column(column, justify="left" if column == "version" else "right")
    for row in rows:
        errors = f"{row.error_rate:.1%}"
        table.add_row(
            row.version, f"{row.rps:.1f}", f"{row.share:.1%}",
            Text(errors, style="bold red" if row.error_rate > 0.01 else "green"),
            _fmt_ms(row.p50), _fmt_ms(row.p99), f"{row.requests:.0f}",
        )
    return table


async def scrape(metrics_url: str) -> dict[str, VersionTotals]:
    """One scrape of the waypoint's ``/metrics``, reduced to per-version totals for the demo service."""
    address = metrics_url.removeprefix("http://").split("/", 1)[0]
    host, _, port = address.rpartition(":")
    response = await http_request(host, int(port), "GET", "/metrics", timeout=5)
    return totals_by_version(parse_exposition(response.text()), service=HOST)


def _waypoint_metrics(status: MeshStatus) -> str:
    for proxy in status.proxies.values():
        if proxy.kind == "waypoint" and proxy.ready:
            return proxy.metrics
    raise DemoError(
        "no waypoint is running, and the demo reads its numbers from the waypoint's metrics",
        advice="see `meshctl status` warnings and the logs under the demo's --state-dir/logs",
    )


async def _fail_v2(status: MeshStatus) -> None:
    """Break v2 the way a bad release would: its app answers 503 (set through its admin path)."""
    for pod in status.pods.values():
        if pod.deployment == "search-service-v2":
            await http_request(pod.ip, APP_PORT, "POST", "/admin/failure?rate=1.0", timeout=5)


async def run_demo(*, state_dir: Path, duration: float, nodes: int = 2, console: Console | None = None) -> int:
    """Run the demo; 0 when the mesh carried traffic and the story could be told, 1 when it did not,
    130 when interrupted (Ctrl-C or SIGTERM: the mesh is drained either way)."""
    console = console or Console(soft_wrap=True)  # long lines stay whole when piped (grep-able logs)
    story = Story()
    with tempfile.TemporaryDirectory(prefix="meshctl-demo-") as workdir:
        manifest = Path(workdir) / "search-canary.yaml"
        manifest.write_text(demo_manifests())
        runner = MeshRunner(
            UpOptions(files=(manifest,), state_dir=state_dir, nodes=nodes, capture="proxy"),
            lambda line: console.print(f"[dim]{line}[/dim]", highlight=False),
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                interrupted = trio.CancelScope()

                async def stop_on_signal() -> None:
                    async for _ in signals:
                        interrupted.cancel()
                        runner.request_stop()
                        return

                nursery.start_soon(stop_on_signal)
                status: MeshStatus = await nursery.start(runner.run)
                try:
                    if not interrupted.cancel_called:  # a signal during startup skips the story
                        with interrupted:
                            await _tell(story, status, state_dir, duration, console)
                finally:
                    runner.request_stop()
                await runner.finished.wait()
                nursery.cancel_scope.cancel()
    if interrupted.cancel_called:
        console.print("interrupted; the demo mesh was drained")
        return 130
    return _summary(story, console)


async def _tell(story: Story, status: MeshStatus, state_dir: Path, duration: float, console: Console) -> None:
    metrics_url = _waypoint_metrics(status)
    console.print(f"reading every number from the waypoint's metrics: {metrics_url}")
    start = trio.current_time()
    act = -1
    last_print = start
    with _ends_with_newline(console), Live(console=console, auto_refresh=False, transient=False) as live:
        while (elapsed := trio.current_time() - start) < duration:
            while act + 1 < len(ACTS) and elapsed >= ACTS[act + 1].starts_at * duration:
                act += 1
                await _enter(act, status, state_dir)
                totals = await _scrape_or_empty(metrics_url)
                story.scrapes.append((trio.current_time(), totals))
                story.act_starts.append(totals)
                story.act_times.append(trio.current_time())
                console.print(f"[bold]act {act + 1} at {elapsed:4.1f}s: {ACTS[act].title}[/bold]")
            await trio.sleep(SCRAPE_INTERVAL)
            story.scrapes.append((trio.current_time(), await _scrape_or_empty(metrics_url)))
            weights = ACTS[act].weights
            header = Text(f"{ACTS[act].title}   VirtualService weights v1={weights[0]} v2={weights[1]}   "
                          f"{elapsed:4.1f}/{duration:.0f}s")
            table = rows_table(f"search-api.{NAMESPACE} per version (last {RATE_WINDOW:.0f}s)", story.live_rows())
            live.update(Group(header, table), refresh=True)
            if not console.is_terminal and trio.current_time() - last_print >= 5:
                last_print = trio.current_time()
                console.print(table)


@contextlib.contextmanager
def _ends_with_newline(console: Console) -> Iterator[None]:
    """The live view's last frame has no newline of its own; later lines must not be glued to it."""
    try:
        yield
    finally:
        console.print()


async def _scrape_or_empty(metrics_url: str) -> dict[str, VersionTotals]:
    try:
        return await scrape(metrics_url)
    except AdminRequestFailed:
        return {}


async def _enter(act: int, status: MeshStatus, state_dir: Path) -> None:
    if act == 1:
        await _fail_v2(status)
    elif act == 2:
        client = ControlPlaneClient(find_admin(state_dir))
        await client.apply(virtual_service(*ACTS[2].weights), source="meshctl demo")


def _summary(story: Story, console: Console) -> int:
    console.print()
    console.print("[bold]summary (from the waypoint's istio_requests_total and request duration histogram)[/bold]")
    seen = 0.0
    outcome: list[Mapping[str, VersionRow]] = []
    for index, act in enumerate(ACTS[: len(story.act_starts)]):
        rows = story.act_rows(index)
        seen += sum(row.requests for row in rows)
        outcome.append({row.version: row for row in rows})
        console.print(rows_table(f"act {index + 1}: {act.title}", rows))
    if seen == 0:
        console.print("[red]no requests reached the waypoint: the mesh did not carry the demo's traffic[/red]")
        return 1
    for line in _verdicts(outcome):
        console.print(line)
    return 0


def _verdicts(acts: Sequence[Mapping[str, VersionRow]]) -> list[str]:
    lines = []
    if acts and "v2" in acts[0]:
        lines.append(f"split: v2 took {acts[0]['v2'].share:.1%} of requests (VirtualService weight 5%)")
    if len(acts) > 1 and "v2" in acts[1]:
        lines.append(f"failure: v2 error rate {acts[1]['v2'].error_rate:.0%} while v1 stayed at "
                     f"{acts[1].get('v1', acts[1]['v2']).error_rate:.0%}")
    if len(acts) > 2:
        v2_after = acts[2]["v2"].requests if "v2" in acts[2] else 0.0
        errors = sum(row.requests * row.error_rate for row in acts[2].values())
        lines.append(f"rollback: v2 received {v2_after:.0f} requests after it; {errors:.0f} errors in total")
    return lines
