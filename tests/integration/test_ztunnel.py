"""Two real ztunnel processes on loopback (static config, certificates from the mesh CA), plain TCP apps.

client ─SOCKS5/HTTP─► ztunnel A (podA:15080) ══HBONE mTLS══► ztunnel B (podB:15008) ─TCP─► app

Node A runs the client pods, node B the server pods; apps run in the test process on the server pods'
IPs. Everything asserted is what a user sees: bytes and hashes, proxy replies, ``/metrics``,
``/config_dump`` and the access log on stderr.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from meshcore.admin.client import http_request
from tests.support.processes import Component, Spawner
from tests.support.ztunnel_mesh import (
    MiB,
    Pod,
    bulk_app,
    echo_app,
    free_block,
    http_app,
    receive_all,
    send_pattern,
    socks5_connect,
    split,
    write_cert_dir,
    write_local_config,
    ztunnel_args,
)

CLIENT_PRINCIPAL = "cluster.local/ns/client/sa/client"
CLIENT_ID = f"spiffe://{CLIENT_PRINCIPAL}"


@attrs.frozen
class Mesh:
    block: int
    a: Component
    b: Component
    pods: dict[str, Pod]
    bulk_results: trio.MemoryReceiveChannel[tuple[int, str, str]]

    def proxy(self, pod: str) -> tuple[str, int]:
        return (self.pods[pod].ip, 15080)

    def ip(self, pod: str) -> str:
        return self.pods[pod].ip

    @property
    def outside(self) -> str:
        return f"127.{self.block}.250.1"

    @property
    def web_host(self) -> str:
        return "web.server.svc.cluster.local"


def layout(block: int) -> dict[str, Pod]:
    web_service = {"server/web.server.svc.cluster.local": {80: 8080, 9000: 9000, 7000: 7000}}
    return {
        "client": Pod("client", "client", "client", f"127.{block}.1.1", "node-a"),
        "intruder": Pod("intruder", "other", "intruder", f"127.{block}.1.2", "node-a"),
        "web": Pod("web", "server", "web", f"127.{block}.2.1", "node-b", services=web_service),
        "guarded": Pod("guarded", "secure", "guarded", f"127.{block}.2.2", "node-b",
                       policies=("secure/allow-client-principal",)),
        "nsguarded": Pod("nsguarded", "secure2", "nsguarded", f"127.{block}.2.3", "node-b",
                         policies=("secure2/allow-client-namespace",)),
        "legacy": Pod("legacy", "server", "legacy", f"127.{block}.2.9", "node-b", protocol="TCP"),
    }


def services(block: int) -> list[dict[str, Any]]:
    return [{
        "name": "web", "namespace": "server", "hostname": "web.server.svc.cluster.local",
        "vips": [f"/240.240.{block}.1"], "ports": {80: 8080, 9000: 9000, 7000: 7000},
    }]


POLICIES: list[dict[str, Any]] = [
    {"name": "deny-9091", "namespace": "server", "scope": "Namespace", "action": "Deny",
     "rules": [[[{"destinationPorts": [9091]}]]]},
    {"name": "allow-client-principal", "namespace": "secure", "scope": "WorkloadSelector", "action": "Allow",
     "rules": [[[{"principals": [{"Exact": CLIENT_PRINCIPAL}]}]]]},
    {"name": "allow-client-namespace", "namespace": "secure2", "scope": "WorkloadSelector", "action": "Allow",
     "rules": [[[{"namespaces": [{"Exact": "client"}]}]]]},
]


@pytest.fixture
async def mesh(spawn: Spawner, tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Mesh]:
    block = free_block()
    pods = layout(block)
    config = tmp_path / "mesh.yaml"
    write_local_config(config, pods.values(), services(block), POLICIES)
    certs = tmp_path / "certs"
    write_cert_dir(certs, [p.identity for p in pods.values()], tmp_path / "ca-state")
    bulk_send, bulk_results = trio.open_memory_channel[tuple[int, str, str]](8)
    web, guarded, nsguarded = pods["web"].ip, pods["guarded"].ip, pods["nsguarded"].ip
    await nursery.start(http_app, web, 8080, b"hello from web\n")
    await nursery.start(bulk_app, web, 9000, 64 * MiB, bulk_send)
    legacy, outside = pods["legacy"].ip, f"127.{block}.250.1"
    for host, port in ((web, 7000), (web, 9091), (guarded, 7000), (nsguarded, 7000), (legacy, 7000), (outside, 7000)):
        await nursery.start(echo_app, host, port)
    b = spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, certs))
    a = spawn.python_module("ztunnel-a", "ztunnel", *ztunnel_args("node-a", f"127.{block}.0.1", config, certs))
    yield Mesh(block=block, a=a, b=b, pods=pods, bulk_results=bulk_results)


async def echo_through(proxy: tuple[str, int], host: str, port: int, payload: bytes) -> tuple[int, bytes]:
    """SOCKS5 to ``host:port``, send ``payload``, half-close, read to EOF: (reply code, echoed bytes)."""
    stream, code = await socks5_connect(proxy, host, port)
    async with stream:
        if code != 0:
            rest = await stream.receive_some(1024)
            assert rest == b"", "the proxy must close the client's connection after a refusal"
            return code, b""
        await stream.send_all(payload)
        await stream.send_eof()
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
        return code, received


async def metrics(component: Component) -> str:
    host, port = split(component.addresses["metrics"])
    response = await http_request(host, port, "GET", "/metrics")
    assert response.status == 200
    return response.text()


def access_logs(component: Component) -> list[dict[str, Any]]:
    lines = []
    for line in component.log_path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "connection complete":
            lines.append(doc)
    return lines


async def logged(component: Component, **fields: Any) -> list[dict[str, Any]]:
    """Access-log lines with ``fields``, waiting (bounded) for the proxy to finish writing them: a client
    sees its EOF a moment before the proxy's copy task ends and logs the connection."""
    for _ in range(100):
        found = [line for line in access_logs(component) if all(line.get(k) == v for k, v in fields.items())]
        if found:
            return found
        await trio.sleep(0.05)
    raise AssertionError(f"no access-log line with {fields} in {component.name}: {access_logs(component)}")


async def metric_value(component: Component, name: str, expected: float, **labels: str) -> float:
    """The summed series, re-scraped (bounded) until it reaches ``expected`` — see :func:`logged`."""
    value = 0.0
    for _ in range(100):
        value = series(await metrics(component), name, **labels)
        if value >= expected:
            break
        await trio.sleep(0.05)
    return value


def series(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_ready_line_reports_bound_addresses(mesh: Mesh) -> None:
    assert mesh.a.addresses["proxy:client/client"] == f"{mesh.ip('client')}:15080"
    assert mesh.b.addresses["hbone:server/web"] == f"{mesh.ip('web')}:15008"
    assert "hbone:client/client" in mesh.a.addresses and "proxy:server/web" in mesh.b.addresses
    host, port = split(mesh.b.addresses["admin"])
    dump = (await http_request(host, port, "GET", "/config_dump")).json()
    assert {w["name"] for w in dump["workloads"]} == set(mesh.pods)
    assert [s["hostname"] for s in dump["services"]] == ["web.server.svc.cluster.local"]
    assert len(dump["policies"]) == 3
    states = {c["identity"]: c["state"] for c in dump["certificates"]}
    assert states == {
        "spiffe://cluster.local/ns/secure/sa/guarded": "Available",
        "spiffe://cluster.local/ns/secure2/sa/nsguarded": "Available",
        "spiffe://cluster.local/ns/server/sa/web": "Available",
    }
    ready_host, ready_port = split(mesh.b.addresses["ready"])
    assert (await http_request(ready_host, ready_port, "GET", "/healthz/ready")).status == 200


async def test_64_mib_each_way_arrives_intact_and_destination_sees_source_identity(mesh: Mesh) -> None:
    size = 64 * MiB
    stream, code = await socks5_connect(mesh.proxy("client"), mesh.web_host, 9000)
    assert code == 0
    sent: list[str] = []
    received: list[tuple[int, str]] = []

    async def send() -> None:
        sent.append(await send_pattern(stream, 1, size))

    async def receive() -> None:
        received.append(await receive_all(stream))

    async with stream:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
    with trio.fail_after(10):
        app_received, app_received_hash, app_sent_hash = await mesh.bulk_results.receive()
    assert app_received == size and app_received_hash == sent[0]
    assert received[0] == (size, app_sent_hash)

    labels = {"reporter": "destination", "source_principal": CLIENT_ID,
              "destination_workload": "web", "connection_security_policy": "mutual_tls"}
    assert await metric_value(mesh.b, "istio_tcp_connections_closed_total", 1, **labels) == 1
    assert await metric_value(mesh.b, "istio_tcp_received_bytes_total", size, **labels) == size
    assert await metric_value(mesh.b, "istio_tcp_sent_bytes_total", size, **labels) == size
    assert await metric_value(mesh.a, "istio_tcp_connections_opened_total", 1, reporter="source",
                              source_workload="client", destination_service="web.server.svc.cluster.local") == 1
    inbound = await logged(mesh.b, direction="inbound", **{"src.identity": CLIENT_ID})
    assert inbound[-1]["bytes_recv"] == size and inbound[-1]["bytes_sent"] == size
    # The source pod reached B through `forwarded: for=`; B trusts it because the proven identity matches.
    assert inbound[-1]["src.addr"].startswith(mesh.ip("client") + ":")
    assert inbound[-1]["src.workload"] == "client/client" and inbound[-1]["dst.workload"] == "server/web"
    assert series(await metrics(mesh.b), "istio_tcp_connections_opened_total", reporter="destination",
                  source_workload="client", source_workload_namespace="client",
                  destination_service="web.server.svc.cluster.local") == 1  # from `forwarded: host=`


async def test_deny_policy_answers_401_and_closes_the_client(mesh: Mesh) -> None:
    code, _ = await echo_through(mesh.proxy("client"), mesh.ip("web"), 9091, b"x")
    assert code == 0x02  # SOCKS5 "connection not allowed by ruleset": the peer answered 401
    code, echoed = await echo_through(mesh.proxy("client"), mesh.ip("web"), 7000, b"still serving")
    assert (code, echoed) == (0, b"still serving")
    assert await metric_value(mesh.b, "istio_tcp_connections_opened_total", 1, reporter="destination",
                              response_flags="DENY", source_principal=CLIENT_ID) == 1
    denied = await logged(mesh.a, direction="outbound", response_flags="DENY")
    assert denied[-1]["result"] == "401"


async def test_allow_by_principal(mesh: Mesh) -> None:
    assert await echo_through(mesh.proxy("client"), mesh.ip("guarded"), 7000, b"hi") == (0, b"hi")
    code, _ = await echo_through(mesh.proxy("intruder"), mesh.ip("guarded"), 7000, b"hi")
    assert code == 0x02


async def test_allow_by_namespace(mesh: Mesh) -> None:
    assert await echo_through(mesh.proxy("client"), mesh.ip("nsguarded"), 7000, b"hi") == (0, b"hi")
    code, _ = await echo_through(mesh.proxy("intruder"), mesh.ip("nsguarded"), 7000, b"hi")
    assert code == 0x02


async def test_passthrough_to_a_non_mesh_address(mesh: Mesh) -> None:
    assert await echo_through(mesh.proxy("client"), mesh.outside, 7000, b"plain") == (0, b"plain")
    outbound = await logged(mesh.a, direction="outbound", **{"dst.addr": f"{mesh.outside}:7000"})
    assert "dst.hbone_addr" not in outbound[-1] and outbound[-1]["bytes_recv"] == len(b"plain")


async def test_a_workload_without_hbone_gets_plain_tcp(mesh: Mesh) -> None:
    assert await echo_through(mesh.proxy("client"), mesh.ip("legacy"), 7000, b"old") == (0, b"old")
    line = (await logged(mesh.a, direction="outbound", **{"dst.workload": "server/legacy"}))[-1]
    assert line["dst.addr"] == f"{mesh.ip('legacy')}:7000" and "dst.hbone_addr" not in line
    assert "hbone:server/legacy" not in mesh.b.addresses  # ztunnel B does not front a non-mesh pod


async def test_service_vip_and_short_name_resolve_through_mesh_state(mesh: Mesh) -> None:
    assert await echo_through(mesh.proxy("client"), f"240.240.{mesh.block}.1", 7000, b"vip") == (0, b"vip")
    assert await echo_through(mesh.proxy("client"), "web.server", 7000, b"short") == (0, b"short")


async def run_curl(*args: str) -> tuple[int, str, str]:
    result = await trio.run_process(["curl", "-sS", "--max-time", "20", *args], capture_stdout=True,
                                    capture_stderr=True, check=False)
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_real_curl_reaches_a_service_by_hostname(mesh: Mesh) -> None:
    proxy_host, proxy_port = mesh.proxy("client")
    url = f"http://{mesh.web_host}/"
    socks = await run_curl("--socks5-hostname", f"{proxy_host}:{proxy_port}", url)
    assert socks == (0, "hello from web\n", "")
    forward = await run_curl("-x", f"http://{proxy_host}:{proxy_port}", url)
    assert forward == (0, "hello from web\n", "")
    tunnel = await run_curl("-p", "-x", f"http://{proxy_host}:{proxy_port}", url)
    assert tunnel == (0, "hello from web\n", "")


async def test_bad_input_is_refused_while_the_same_ztunnel_keeps_serving(mesh: Mesh) -> None:
    # A tunnel opened before the bad input must keep working through it.
    stream, code = await socks5_connect(mesh.proxy("client"), mesh.ip("web"), 7000)
    assert code == 0
    async with stream:
        await stream.send_all(b"before ")
        # SOCKS5 greeting offering only username/password (0x02): "no acceptable methods", then closed.
        bad = await trio.open_tcp_stream(*mesh.proxy("client"))
        async with bad:
            await bad.send_all(b"\x05\x01\x02")
            assert await bad.receive_some(16) == b"\x05\xff"
            assert await bad.receive_some(16) == b""
        # Plaintext HTTP to the HBONE port: the TLS handshake fails, that connection is closed.
        plain = await trio.open_tcp_stream(mesh.ip("web"), 15008)
        async with plain:
            await plain.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            with trio.fail_after(10):
                try:
                    while await plain.receive_some(4096):
                        pass
                except trio.BrokenResourceError:
                    pass  # a reset is as good as a close here
        await stream.send_all(b"after")
        await stream.send_eof()
        echoed = b""
        while chunk := await stream.receive_some(4096):
            echoed += chunk
    assert echoed == b"before after"
    assert await echo_through(mesh.proxy("client"), mesh.ip("web"), 7000, b"new") == (0, b"new")
