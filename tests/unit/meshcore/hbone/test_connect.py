"""Table-driven tests of the sans-IO CONNECT contract (DESIGN §3)."""

from __future__ import annotations

import ipaddress
import re

import pytest

from meshcore.hbone.connect import (
    MAX_HEADER_LIST_SIZE,
    ConnectRequest,
    ConnectStatus,
    IPAddress,
    Rejection,
    build_connect_headers,
    format_authority,
    parse_authority,
    parse_forwarded,
    parse_response,
    validate_connect,
)

LOCAL = {ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("fd00::5")}


def serves(ip: IPAddress) -> bool:
    return ip in LOCAL


def connect(authority: bytes, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b":method", b"CONNECT"), (b":authority", authority), *extra]


@pytest.mark.parametrize(
    ("headers", "status", "reason_part"),
    [
        (
            [(b":method", b"GET"), (b":authority", b"10.0.0.5:80"), (b":scheme", b"https"), (b":path", b"/")],
            400,
            "not CONNECT",
        ),
        ([(b":authority", b"10.0.0.5:80")], 400, "not CONNECT"),
        (connect(b"10.0.0.5:80", (b":path", b"/")), 400, "authority-form"),
        (connect(b"10.0.0.5:80", (b":scheme", b"https")), 400, "authority-form"),
        (connect(b"10.0.0.5:80", (b":protocol", b"websocket")), 400, "authority-form"),
        ([(b":method", b"CONNECT")], 400, "no :authority"),
        (connect(b"10.0.0.5"), 400, "no port"),
        (connect(b"10.0.0.5:0"), 400, "outside 1..65535"),
        (connect(b"10.0.0.5:65536"), 400, "outside 1..65535"),
        (connect(b"10.0.0.5:http"), 400, "bad port"),
        (connect(b"example.com:80"), 400, "not an IP address"),
        (connect(b"fd00::5:80"), 400, "must be bracketed"),
        (connect(b"[fd00::5]80"), 400, "[ipv6]:port"),
        (connect(b"10.9.9.9:80"), 400, "not an address served here"),
        (connect(b"[fd00::9]:80"), 400, "not an address served here"),
        (connect(b"10.0.0.5:15008"), 400, "proxy port"),
        (connect(b"10.0.0.5:15001"), 503, "proxy port"),
        (connect(b"10.0.0.5:15006"), 503, "proxy port"),
        (connect(b"10.0.0.5:80", (b"X-Upper", b"1")), 400, "lower-case"),
        (connect(b"10.0.0.5:80", (b"connection", b"close")), 400, "connection-specific"),
        (
            [(b":method", b"CONNECT"), (b"baggage", b"a=1"), (b":authority", b"10.0.0.5:80")],
            400,
            "after regular",
        ),
        (connect(b"10.0.0.5:80", (b":authority", b"10.0.0.5:81")), 400, "duplicate"),
        (connect(b"10.0.0.5:80", (b":bogus", b"1")), 400, "unknown pseudo-header"),
        (connect(b"10.0.0.5:80", (b"x-big", b"a" * MAX_HEADER_LIST_SIZE)), 400, "exceeds"),
        (connect(b"10.0.0.5:80", (b"x-bin", b"\xff\xfe")), 400, "not valid text"),
        (connect(b"\xff:80"), 400, "ascii"),
    ],
)
def test_rejections(headers: list[tuple[bytes, bytes]], status: int, reason_part: str) -> None:
    decision = validate_connect(headers, serves=serves)
    assert isinstance(decision, Rejection)
    assert decision.status == status
    assert reason_part in decision.reason


@pytest.mark.parametrize(
    ("authority", "ip", "port"),
    [
        (b"10.0.0.5:8080", "10.0.0.5", 8080),
        (b"[fd00::5]:443", "fd00::5", 443),
        (b"10.0.0.5:1", "10.0.0.5", 1),
        (b"10.0.0.5:65535", "10.0.0.5", 65535),
    ],
)
def test_valid_authorities(authority: bytes, ip: str, port: int) -> None:
    decision = validate_connect(connect(authority), serves=serves)
    assert isinstance(decision, ConnectRequest)
    assert decision.target_ip == ipaddress.ip_address(ip)
    assert decision.target_port == port
    assert decision.authority == authority.decode()


def test_request_carries_origin_and_trace_headers() -> None:
    decision = validate_connect(
        connect(
            b"10.0.0.5:8080",
            (b"forwarded", b'for="10.1.2.3:41000";host=reviews.default.svc.cluster.local'),
            (b"baggage", b"k8s.namespace.name=default"),
            (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ),
        serves=serves,
    )
    assert isinstance(decision, ConnectRequest)
    assert decision.forwarded_for == (ipaddress.ip_address("10.1.2.3"), 41000)
    assert decision.forwarded_host == "reviews.default.svc.cluster.local"
    assert decision.baggage == "k8s.namespace.name=default"
    assert decision.traceparent is not None and decision.traceparent.startswith("00-0af7")
    assert ("baggage", "k8s.namespace.name=default") in decision.headers


@pytest.mark.parametrize(
    ("value", "client", "host"),
    [
        ('for="10.1.2.3:41000"', ("10.1.2.3", 41000), None),
        ("for=10.1.2.3", ("10.1.2.3", None), None),
        ('for="[fd00::1]:5"', ("fd00::1", 5), None),
        ('For="10.1.2.3:1";Host=svc, for=10.9.9.9', ("10.1.2.3", 1), "svc"),
        ('for="_hidden"', None, None),
        ("garbage", None, None),
    ],
)
def test_parse_forwarded(value: str, client: tuple[str, int | None] | None, host: str | None) -> None:
    parsed_client, parsed_host = parse_forwarded(value)
    expected = None if client is None else (ipaddress.ip_address(client[0]), client[1])
    assert parsed_client == expected
    assert parsed_host == host


def test_build_round_trips_through_validate() -> None:
    headers = build_connect_headers(
        format_authority("fd00::5", 9090),
        forwarded_for=("10.1.2.3", 41000),
        forwarded_host="svc",
        baggage="b=1",
        traceparent="00-1-2-01",
    )
    assert headers[:2] == [(":method", "CONNECT"), (":authority", "[fd00::5]:9090")]
    decision = validate_connect([(n.encode(), v.encode()) for n, v in headers], serves=serves)
    assert isinstance(decision, ConnectRequest)
    assert decision.forwarded_for == (ipaddress.ip_address("10.1.2.3"), 41000)
    assert decision.forwarded_host == "svc"
    assert (decision.baggage, decision.traceparent) == ("b=1", "00-1-2-01")


def test_build_refuses_a_bad_authority() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        build_connect_headers("reviews:9080")


def test_parse_authority_errors_name_the_input() -> None:
    with pytest.raises(ValueError, match=re.escape("'10.0.0.1:x'")):
        parse_authority("10.0.0.1:x")


@pytest.mark.parametrize(
    ("headers", "status", "baggage"),
    [
        ([(b":status", b"200"), (b"baggage", b"k=v")], 200, "k=v"),
        ([(b":status", b"401")], 401, None),
        ([(b":status", b"abc")], 502, None),
        ([], 502, None),
    ],
)
def test_parse_response(headers: list[tuple[bytes, bytes]], status: int, baggage: str | None) -> None:
    response = parse_response(headers)
    assert (response.status, response.baggage) == (status, baggage)


def test_status_values_match_the_contract() -> None:
    assert [int(s) for s in ConnectStatus] == [200, 400, 401, 503]
