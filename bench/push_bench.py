"""Config push at mesh scale: a full push of W workloads and S services to C clients, then one delta.

Issue 4's bench entry (defaults: 2,000 workloads, 500 services, 10 clients). Everything real on
loopback: the mesh CA's serving certificate, the TLS control endpoint with node tokens, the push server
with its debounce, and PushClients whose appliers decode every body with the discovery schema (what a
ztunnel pays). Reported per phase: wall time until every client is synced, and the application bytes
each client received (WebSocket frames after TLS decryption), counted by a wrapping stream.

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
from istiod_lite.push.delta import version_of
from istiod_lite.push.server import PushServer
from istiod_lite.tokens import NodeTokenAuthenticator, NodeTokens
from meshcore.identity.ca_client import control_plane_context
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from meshcore.push.protocol import JSON
from meshcore.telemetry.logs import configure_logging
from schemas.discovery import (
    NetworkAddress,
    Service,
    ServicePort,
    Workload,
    decode,
    resource_key,
    to_json,
)

TYPES = ("workload", "service")


def synthetic_snapshot(workloads: int, services: int) -> dict[str, dict[str, JSON]]:
    """``services`` services in 10 namespaces, workloads spread over them (4 nodes), all with addresses."""
    pushed_services = [
        Service(
            name=f"svc-{i}",
            namespace=f"ns-{i % 10}",
            hostname=f"svc-{i}.ns-{i % 10}.svc.cluster.local",
            vips=(NetworkAddress(address=f"240.240.{i // 250}.{i % 250 + 1}"),),
            ports=(ServicePort(service_port=80, target_port=8080),),
        )
        for i in range(services)
    ]
    pushed_workloads = []
    for i in range(workloads):
        service = pushed_services[i % services] if services else None
        pushed_workloads.append(
            Workload(
                uid=f"Kubernetes//Pod/ns-{i % 10}/pod-{i}",
                name=f"pod-{i}",
                namespace=f"ns-{i % 10}",
                addresses=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",),
                service_account=f"sa-{i % 50}",
                node=f"node-{i % 4}",
                workload_name=f"deploy-{i % services if services else 0}",
                services={f"{service.namespace}/{service.hostname}": {80: 8080}} if service else {},
            )
        )
    return {
        "workload": {resource_key(w): to_json(w) for w in pushed_workloads},
        "service": {resource_key(s): to_json(s) for s in pushed_services},
    }


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
        snapshot = synthetic_snapshot(workloads, services)
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
    return BenchResult(workloads, services, clients, (full, delta))


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
    for phase in result.phases:
        print(
            f"  {phase.name:<18} {phase.seconds * 1000:9.1f} ms   "
            f"{phase.bytes_per_client / 1024:9.1f} KiB per client   {phase.bytes_total / 1024 / 1024:7.2f} MiB total"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
