"""Config push at mesh scale: a full push of W workloads and S services to C clients, then one delta.

Issue 4's bench entry (defaults: 2,000 workloads, 500 services, 10 clients). Everything real on
loopback: istiod_lite's translation of generated manifests and pods (timed separately), the mesh CA's
serving certificate, the TLS control endpoint with node tokens, the push server with its debounce,
and PushClients whose appliers decode every body with the discovery schema (what a ztunnel pays).
Reported per phase: wall time until every client is synced, and the application bytes each client
received (WebSocket frames after TLS decryption), counted by a wrapping stream.

    python -m bench.push_bench [--workloads 2000] [--services 500] [--clients 10] [--json]

Bounded: each phase has a timeout (``--timeout``, default 120 s) and the run stops after the delta.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.control_server import ControlServer, serving_context
from istiod_lite.pod_inventory import Pod
from istiod_lite.push.delta import version_of
from istiod_lite.push.server import PushServer
from istiod_lite.server import MeshTranslation
from istiod_lite.tokens import NodeTokenAuthenticator, NodeTokens
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import configure_logging
from schemas.discovery import decode
from schemas.load import load_text

TYPES = ("workload", "service")


def synthetic_resources(workloads: int, services: int) -> tuple[list[Any], list[Pod]]:
    """``services`` Services in 10 namespaces, each selecting one Deployment; ``workloads`` pods spread
    over them and over 4 nodes, each with an address (as the runner's pods.json reports them)."""
    per_service, extra = divmod(workloads, max(services, 1))
    documents: list[str] = []
    pods: list[Pod] = []
    for i in range(services):
        namespace, replicas = f"ns-{i % 10}", per_service + (1 if i < extra else 0)
        documents.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: {namespace}}}\n"
            f"spec: {{selector: {{app: app-{i}}}, ports: [{{port: 80, targetPort: 8080, name: http}}]}}\n"
        )
        documents.append(
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: {namespace}}}\n"
            f"spec: {{replicas: {replicas}, selector: {{matchLabels: {{app: app-{i}}}}}, template: "
            f"{{metadata: {{labels: {{app: app-{i}}}}}, spec: {{serviceAccountName: sa-{i % 50}, "
            f"containers: [{{name: app, command: [serve]}}]}}}}}}\n"
        )
        for r in range(replicas):
            n = len(pods)
            pods.append(
                Pod(
                    name=f"app-{i}-{r}",
                    namespace=namespace,
                    ip=f"10.{n // 65536}.{n // 256 % 256}.{n % 256}",
                    node=f"node-{n % 4}",
                    labels={"app": f"app-{i}"},
                    service_account=f"sa-{i % 50}",
                    deployment=f"app-{i}",
                )
            )
    loaded = load_text("---\n".join(documents), "push-bench")
    if not loaded.ok:  # pragma: no cover - the generator above writes valid manifests
        raise RuntimeError(f"bench manifests invalid: {loaded.errors[0]}")
    return loaded.resources, pods


def synthetic_snapshot(workloads: int, services: int) -> dict[str, dict[str, JSON]]:
    """The pushed state istiod_lite's real translation makes of :func:`synthetic_resources`."""
    resources, pods = synthetic_resources(workloads, services)
    pushed = MeshTranslation()(resources, pods)
    return {type_name: dict(pushed[type_name]) for type_name in TYPES}


class CountingStream(trio.abc.Stream):
    """A pass-through stream that counts the bytes it receives (the push payload, post-TLS)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define
class DecodingApplier:
    """What a proxy does with a push: decode every body (schema-checked), then swap it in."""

    state: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def apply(self, type_name: str, upserts: dict[str, JSON], removed: list[str], full: bool) -> None:
        decoded = {key: decode(type_name, body) for key, body in upserts.items()}
        new = {} if full else dict(self.state.get(type_name, {}))
        for key in removed:
            new.pop(key, None)
        new.update(decoded)
        self.state[type_name] = new


@attrs.frozen
class Phase:
    name: str
    seconds: float
    bytes_per_client: int
    bytes_total: int


@attrs.frozen
class BenchResult:
    workloads: int
    services: int
    clients: int
    translate_seconds: float
    phases: tuple[Phase, ...]

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


async def run_bench(workloads: int, services: int, clients: int, *, timeout: float = 120.0) -> BenchResult:
    with tempfile.TemporaryDirectory(prefix="push-bench-") as state_text:
        state = Path(state_text)
        ca = CertificateAuthority.load_or_create(state)
        tokens = NodeTokens(state)
        push = PushServer(types=TYPES, debounce=0.01, max_delay=0.05)
        server = ControlServer(
            ssl_context=serving_context(ca),
            authenticator=NodeTokenAuthenticator(tokens),
            handlers={"/v1/xds": push.handler},
        )
        resources, pods = synthetic_resources(workloads, services)
        started = time.perf_counter()
        translated = MeshTranslation()(resources, pods)
        translate_seconds = round(time.perf_counter() - started, 4)
        snapshot = {type_name: dict(translated[type_name]) for type_name in TYPES}
        client_ctx = control_plane_context(ca.trust_bundle_pem())
        async with trio.open_nursery() as nursery:
            await nursery.start(push.run)
            host, port = await nursery.start(server.run)
            push.publish(snapshot)
            for type_name in TYPES:
                await push.wait_published(type_name)
            counters: list[CountingStream] = []
            appliers = [DecodingApplier() for _ in range(clients)]
            push_clients = [
                PushClient(
                    f"wss://{host}:{port}/v1/xds",
                    tokens.issue(f"node-{i}"),
                    client_ctx,
                    TYPES,
                    appliers[i],
                    backoff=Backoff(initial=0.05, maximum=0.5),
                    dialer=_counting_dialer(host, port, client_ctx, counters),
                )
                for i in range(clients)
            ]
            started = time.perf_counter()
            for client in push_clients:
                await nursery.start(client.run)
            with trio.fail_after(timeout):
                for client in push_clients:
                    await client.wait_synced()
            full = _phase("full push", started, counters, [0] * len(counters))
            for applier in appliers:
                assert len(applier.state["workload"]) == workloads and len(applier.state["service"]) == services

            baseline = [c.received for c in counters]
            changed = dict(snapshot["service"])
            first = next(iter(changed), None)
            if first is not None:
                changed[first] = {**changed[first], "subject_alt_names": ["spiffe://cluster.local/ns/x/sa/y"]}
            started = time.perf_counter()
            push.publish({"service": changed})
            new_version = (await push.wait_published("service", version_of(changed))).version
            with trio.fail_after(timeout):
                for client in push_clients:
                    while client.session.versions.get("service") != new_version:
                        await client.wait_changed()
            delta = _phase("one-service delta", started, counters, baseline)
            nursery.cancel_scope.cancel()
    return BenchResult(workloads, services, clients, translate_seconds, (full, delta))


def _phase(name: str, started: float, counters: Sequence[CountingStream], baseline: Sequence[int]) -> Phase:
    seconds = time.perf_counter() - started
    received = [c.received - b for c, b in zip(counters, baseline, strict=True)]
    return Phase(name, round(seconds, 4), max(received, default=0), sum(received))


def _counting_dialer(host: str, port: int, ctx: ssl.SSLContext, counters: list[CountingStream]) -> Any:
    async def dial() -> trio.abc.Stream:
        tcp = await trio.open_tcp_stream(host, port)
        tls = trio.SSLStream(tcp, ctx, server_hostname=host, https_compatible=True)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        counting = CountingStream(tls)
        counters.append(counting)  # one connection per client in this run (no reconnects expected)
        return counting

    return dial


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.push_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=2000)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("warning", component="push-bench")  # logs to stderr; stdout is the report
    result = trio.run(lambda: run_bench(args.workloads, args.services, args.clients, timeout=args.timeout))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"push bench: {result.workloads} workloads, {result.services} services, {result.clients} clients")
    print(f"  {'translate':<18} {result.translate_seconds * 1000:9.1f} ms")
    for phase in result.phases:
        print(
            f"  {phase.name:<18} {phase.seconds * 1000:9.1f} ms   "
            f"{phase.bytes_per_client / 1024:9.1f} KiB per client   {phase.bytes_total / 1024 / 1024:7.2f} MiB total"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
