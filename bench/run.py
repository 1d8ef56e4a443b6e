"""``python -m bench.run [--quick]``: the mesh side by side with a direct connection and with Envoy.

Scenarios (bench/README.md draws each byte path):

* ``direct``       wrk → nginx
* ``ztunnel``      wrk → client pod's ztunnel (explicit proxy) ══HBONE══► server node's ztunnel → nginx
* ``ztunnel-2w``   the same with ``--workers 2`` ztunnels (a second mesh; ``--no-workers`` skips it)
* ``envoy-hbone``  wrk → Envoy (tcp_proxy + tunneling_config) ══HBONE══► Envoy (CONNECT) → nginx
* ``waypoint``     wrk → ztunnel ══► waypoint (95/5 VirtualService) ══► ztunnel → nginx v1|v2
* ``envoy-l7``     wrk → Envoy router (weighted_clusters 95/5) → nginx v1|v2

Workloads, each scenario in turn within a round (A B C … A B C …), ``--rounds`` rounds, medians kept:
bulk throughput of one stream, closed-loop requests/s over 64 connections, latency p50/p99 at a paced
2,000 requests/s over 4 and over 64 connections, new connections/s (one request per connection), and
the CPU seconds the scenario's proxies used per GB and per 10k requests. After the rounds: idle RSS,
peak RSS, and memory with N concurrent idle tunnels (10,000; 1,000 with ``--quick``).

Results: ``bench/results/<timestamp>.json`` and ``.md`` (every figure, its ratio to direct and to the
Envoy counterpart, the machine, versions and commands), also printed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from bench import procstats, streams, wrk
from bench.report import ratios, render_markdown
from bench.setup import (
    ENVOY,
    NGINX,
    SHOP_HOST,
    WEB_HOST,
    Envoys,
    Mesh,
    start_envoys,
    start_mesh,
    stop,
    stop_envoys,
    write_backend_files,
)

RESULTS = Path(__file__).resolve().parent / "results"
COUNTS = frozenset({"bulk_failures"})  # summed over the rounds, not a median
COUNTERPART = {"ztunnel": "envoy-hbone", "ztunnel-2w": "envoy-hbone", "waypoint": "envoy-l7"}


@attrs.frozen
class Profile:
    rounds: int
    seconds: float  # per wrk run
    bulk_mib: int
    idle_tunnels: int


FULL = Profile(rounds=3, seconds=8, bulk_mib=512, idle_tunnels=10_000)
QUICK = Profile(rounds=3, seconds=2, bulk_mib=128, idle_tunnels=1_000)


@attrs.frozen
class Scenario:
    name: str
    connect: str  # what wrk connects to: http://ip:port
    entry: tuple[str, int]
    url: str  # the URL requested (absolute; the proxy scenarios put it in the request line)
    host: str
    through_proxy: bool
    proxy_pids: Callable[[], list[int]]
    bulk: bool = True


def _scenarios(mesh: Mesh, workers_mesh: Mesh | None, envoys: Envoys) -> list[Scenario]:
    web = f"http://{mesh.pod_ip('web')}:8080"

    Via = tuple[str, tuple[str, int], str, Callable[[], list[int]]]

    def through(m: Mesh, host: str, kinds: tuple[str, ...]) -> Via:
        client = m.pod_ip("client")
        pids = m.proxy_pids(*kinds)
        return (f"http://{client}:15080", (client, 15080), f"http://{host}/",
                lambda: [d for pid in pids for d in procstats.descendants(pid)])

    out = [Scenario("direct", web, (mesh.pod_ip("web"), 8080), f"{web}/", f"{mesh.pod_ip('web')}:8080", False,
                    lambda: [])]
    connect, entry, url, pids = through(mesh, WEB_HOST, ("ztunnel",))
    out.append(Scenario("ztunnel", connect, entry, url, WEB_HOST, True, pids))
    if workers_mesh is not None:
        connect, entry, url, pids = through(workers_mesh, WEB_HOST, ("ztunnel",))
        out.append(Scenario("ztunnel-2w", connect, entry, url, WEB_HOST, True, pids))
    hbone = f"http://{envoys.hbone_entry[0]}:{envoys.hbone_entry[1]}"
    out.append(Scenario("envoy-hbone", hbone, envoys.hbone_entry, f"{hbone}/", f"{mesh.pod_ip('web')}:8080", False,
                        lambda: list(envoys.hbone_pids)))
    connect, entry, url, pids = through(mesh, SHOP_HOST, ("ztunnel", "waypoint"))
    out.append(Scenario("waypoint", connect, entry, url, SHOP_HOST, True, pids, bulk=False))
    router = f"http://{envoys.router_entry[0]}:{envoys.router_entry[1]}"
    out.append(Scenario("envoy-l7", router, envoys.router_entry, f"{router}/", SHOP_HOST, False,
                        lambda: list(envoys.router_pids), bulk=False))
    return out


Samples = dict[str, dict[str, list[float]]]  # scenario → metric → one value per round


def _measure_round(scenario: Scenario, profile: Profile, samples: Samples, log: Callable[[str], None]) -> None:
    record = samples[scenario.name]
    pids = scenario.proxy_pids()

    def wrk_run(connections: int, *, rate: float | None = None, close: bool = False) -> wrk.WrkResult:
        try:
            return wrk.run(connect=scenario.connect, url=scenario.url, host=scenario.host,
                           connections=connections, seconds=profile.seconds, through_proxy=scenario.through_proxy,
                           close=close, rate=rate)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:  # recorded as a failed run
            log(f"  {scenario.name:12} wrk -c{connections} failed: {exc}")
            return wrk.WrkResult(requests=0, seconds=profile.seconds, errors=1, non_2xx=0, p50_ms=None, p99_ms=None)

    if scenario.bulk:
        for attempt in (1, 2):  # one failed stream is recorded and retried, not the end of the run
            cpu_before = procstats.cpu_seconds(pids)
            try:
                bulk = streams.bulk_download(scenario.entry, scenario.url.split("/")[2], "/bulk",
                                             through_proxy=scenario.through_proxy)
            except (OSError, RuntimeError) as exc:
                record["bulk_failures"].append(1.0)
                log(f"  {scenario.name:12} bulk attempt {attempt} failed: {exc}")
                continue
            record["bulk_MBps"].append(bulk.mb_per_s)
            if pids:
                record["cpu_s_per_GB"].append((procstats.cpu_seconds(pids) - cpu_before) / (bulk.bytes / 1e9))
            break
    cpu_before = procstats.cpu_seconds(pids)
    closed = wrk_run(64)
    record["rps_64c"].append(closed.rps)
    record["errors"].append(closed.errors + closed.non_2xx)
    if pids and closed.requests:
        record["cpu_s_per_10k_req"].append((procstats.cpu_seconds(pids) - cpu_before) / closed.requests * 1e4)
    for connections in (4, 64):
        paced = wrk_run(connections, rate=2000)
        if paced.p50_ms is not None and paced.p99_ms is not None:
            record[f"p50_ms_2000rps_{connections}c"].append(paced.p50_ms)
            record[f"p99_ms_2000rps_{connections}c"].append(paced.p99_ms)
        record[f"achieved_rps_{connections}c"].append(paced.rps)
        record["errors"].append(paced.errors + paced.non_2xx)
    if scenario.bulk:
        fresh = wrk_run(16, close=True)
        record["new_conn_per_s"].append(fresh.rps)
        record["errors"].append(fresh.errors + fresh.non_2xx)
    p99 = record["p99_ms_2000rps_64c"][-1] if record["p99_ms_2000rps_64c"] else float("nan")
    bulk_now = record["bulk_MBps"][-1] if record["bulk_MBps"] else float("nan")
    log(f"  {scenario.name:12} rps {closed.rps:8.0f}  p99@2000/64c {p99:7.2f} ms"
        + (f"  bulk {bulk_now:7.0f} MB/s" if scenario.bulk else ""))


def _memory(scenarios: list[Scenario], profile: Profile, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    memory: dict[str, dict[str, float]] = defaultdict(dict)
    for scenario in scenarios:
        pids = scenario.proxy_pids()
        if pids:
            memory[scenario.name]["peak_rss_MiB"] = procstats.peak_rss_mib(pids)
    for scenario in scenarios:
        if scenario.name not in ("ztunnel", "ztunnel-2w", "envoy-hbone"):
            continue
        pids = scenario.proxy_pids()
        target = scenario.url.split("/")[2]
        opened, failed, rss = trio.run(functools.partial(
            streams.hold_idle, scenario.entry, target, profile.idle_tunnels, through_proxy=scenario.through_proxy,
            measure=functools.partial(procstats.rss_mib, pids)))
        memory[scenario.name][f"rss_MiB_{profile.idle_tunnels}_idle"] = rss
        memory[scenario.name]["idle_tunnels_failed"] = float(failed)
        log(f"  {scenario.name:12} {opened} idle tunnels ({failed} failed): {rss:.0f} MiB")
    return memory


def _versions() -> dict[str, str]:
    def first_line(argv: Sequence[str]) -> str:
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=20, check=False)
        except OSError as exc:
            return f"unavailable ({exc})"
        return (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else "?"

    return {
        "python": sys.version.split()[0],
        "envoy": first_line([ENVOY, "--version"]).split("version:")[-1].strip(),
        "nginx": first_line([NGINX, "-v"]),
        "wrk": first_line(["wrk", "-v"]),
    }


def _machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu": model, "kernel": platform.release(), "load_avg_start": os.getloadavg()}


def run(profile: Profile, *, workers: bool, log: Callable[[str], None]) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 1 << 17)), hard))  # children inherit it
    scratch = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    write_backend_files(scratch, profile.bulk_mib)
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    log(f"starting the mesh (meshctl up) and Envoy in {scratch}")
    mesh = start_mesh(scratch, "mesh")
    workers_mesh: Mesh | None = None
    envoys: Envoys | None = None
    try:
        idle_rss = {"ztunnel (one node)": procstats.rss_mib(mesh.proxy_pids("ztunnel")[:1])}
        if workers:
            workers_mesh = start_mesh(scratch, "workers", "--ztunnel-workers", "2")
        envoys = start_envoys(scratch, mesh)
        idle_rss["envoy (one process)"] = procstats.rss_mib(envoys.hbone_pids[:1])
        scenarios = _scenarios(mesh, workers_mesh, envoys)
        for scenario in scenarios:  # warm-up: pools, TLS sessions, TCP windows, page cache of the bulk file
            wrk.run(connect=scenario.connect, url=scenario.url, host=scenario.host, connections=8, seconds=1,
                    through_proxy=scenario.through_proxy)
            if scenario.bulk:
                streams.bulk_download(scenario.entry, scenario.url.split("/")[2], "/bulk",
                                      through_proxy=scenario.through_proxy)
        samples: Samples = defaultdict(lambda: defaultdict(list))
        for index in range(profile.rounds):
            log(f"round {index + 1}/{profile.rounds}")
            for scenario in scenarios:
                _measure_round(scenario, profile, samples, log)
        log("memory")
        memory = _memory(scenarios, profile, log)
    finally:
        if envoys is not None:
            stop_envoys(envoys)
        if workers_mesh is not None:
            stop(workers_mesh.process)
        stop(mesh.process)
    medians = {name: {metric: float(sum(values)) if metric in COUNTS else statistics.median(values)
                      for metric, values in metrics.items() if values}
               for name, metrics in samples.items()}
    for name, figures in memory.items():
        medians.setdefault(name, {}).update(figures)
    return {
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": round(time.monotonic() - clock, 1),
        "profile": attrs.asdict(profile),
        "machine": {**_machine(), "load_avg_end": os.getloadavg()},
        "versions": _versions(),
        "commands": {"load": "wrk -t1 (HTTP/1.1, 1 KiB body; paced runs use wrk's delay() hook)",
                     "bulk": "one GET /bulk (sparse file by sendfile), read with recv_into(1 MiB)",
                     "envoy": "envoy --concurrency 1 per process", "mesh": "meshctl up --nodes 2 (proxy mode)"},
        "idle_rss_MiB": idle_rss,
        "medians": medians,
        "samples": {name: dict(metrics) for name, metrics in samples.items()},
        "ratios": ratios(medians, COUNTERPART),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (under 3 minutes)")
    parser.add_argument("--rounds", type=int, help="override the number of interleaved rounds")
    parser.add_argument("--no-workers", action="store_true", help="skip the --workers 2 mesh")
    parser.add_argument("--seconds", type=float, help="override the length of each load run")
    parser.add_argument("--idle-tunnels", type=int, help="override how many idle tunnels the memory test holds")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and markdown results")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    overrides = {"rounds": args.rounds, "seconds": args.seconds, "idle_tunnels": args.idle_tunnels}
    profile = attrs.evolve(profile, **{k: v for k, v in overrides.items() if v is not None})

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    result = run(profile, workers=not args.no_workers, log=log)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = result["started"].replace(":", "").replace("-", "")
    (args.out / f"{stamp}.json").write_text(json.dumps(result, indent=2))
    markdown = render_markdown(result)
    (args.out / f"{stamp}.md").write_text(markdown)
    print(markdown)
    log(f"written: {args.out / stamp}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
