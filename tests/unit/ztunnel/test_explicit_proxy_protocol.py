"""The explicit proxy's greeting parser: what curl, Python and SOCKS clients really send."""

import struct

import pytest

from ztunnel.explicit_proxy_protocol import (
    ExplicitProxyParser,
    Outcome,
    ProxyKind,
    ProxyProtocolError,
    ProxyRequest,
    reply_for,
    split_host_port,
)


def socks_request(atyp: int, addr: bytes, port: int, command: int = 1) -> bytes:
    return bytes([5, command, 0, atyp]) + addr + struct.pack("!H", port)


def parse_all(*chunks: bytes) -> tuple[ExplicitProxyParser, ProxyRequest | None]:
    parser = ExplicitProxyParser()
    result = None
    for chunk in chunks:
        result = parser.feed(chunk)
    return parser, result


@pytest.mark.parametrize(
    ("name", "request_bytes", "host", "port"),
    [
        ("socks5 ipv4 (curl --socks5)", socks_request(1, bytes([127, 0, 0, 9]), 8080), "127.0.0.9", 8080),
        ("socks5 ipv6", socks_request(4, bytes(15) + b"\x01", 443), "::1", 443),
        (
            "socks5 domain (curl socks5h:// resolves in the mesh)",
            socks_request(3, bytes([len(b"search-api.prod.svc.cluster.local")])
                          + b"search-api.prod.svc.cluster.local", 8080),
            "search-api.prod.svc.cluster.local",
            8080,
        ),
    ],
)
def test_socks5_connect(name: str, request_bytes: bytes, host: str, port: int) -> None:
    parser, request = parse_all(b"\x05\x01\x00", request_bytes)
    assert parser.greeting_reply == b"\x05\x00"
    assert request == ProxyRequest(kind=ProxyKind.SOCKS5, host=host, port=port)


def test_socks5_arrives_byte_by_byte_and_keeps_early_data() -> None:
    data = b"\x05\x02\x02\x00" + socks_request(1, bytes([10, 1, 2, 3]), 80) + b"GET / HTTP/1.1\r\n"
    parser = ExplicitProxyParser()
    request_end = len(data) - len(b"GET / HTTP/1.1\r\n")
    results = [parser.feed(data[i : i + 1]) for i in range(request_end)]
    assert all(r is None for r in results[:-1])
    assert results[-1] == ProxyRequest(kind=ProxyKind.SOCKS5, host="10.1.2.3", port=80)


def test_socks5_early_data_in_the_same_segment() -> None:
    _, request = parse_all(b"\x05\x01\x00" + socks_request(1, bytes([127, 0, 0, 1]), 80) + b"hello")
    assert request is not None and request.early_data == b"hello"


@pytest.mark.parametrize(
    ("name", "data", "reply", "message"),
    [
        ("socks5 with only username/password auth", b"\x05\x01\x02", b"\x05\xff", "no acceptable auth"),
        ("socks5 BIND command", b"\x05\x01\x00" + socks_request(1, bytes(4), 80, command=2), None, "command 2"),
        ("socks5 UDP ASSOCIATE", b"\x05\x01\x00" + socks_request(1, bytes(4), 80, command=3), None, "command 3"),
        ("socks5 unknown address type", b"\x05\x01\x00" + bytes([5, 1, 0, 9, 0, 0]), None, "address type 9"),
        ("socks5 request with wrong version", b"\x05\x01\x00" + bytes([4, 1, 0, 1, 0, 0, 0, 0, 0, 80]), None,
         "version 4"),
        ("TLS ClientHello sent to the proxy", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", None,
         "not SOCKS5 and not an HTTP request"),
        ("origin-form request to the proxy", b"GET /index.html HTTP/1.1\r\nhost: x\r\n\r\n", None,
         "absolute-form"),
        ("https absolute-form", b"GET https://x/ HTTP/1.1\r\n\r\n", None, "need CONNECT"),
        ("CONNECT without port", b"CONNECT example HTTP/1.1\r\n\r\n", None, "host:port"),
        ("CONNECT with a bad port", b"CONNECT example:99999 HTTP/1.1\r\n\r\n", None, "host:port"),
        ("garbled request line", b"CONNECT a:1\r\n\r\n", None, "malformed request line"),
    ],
)
def test_bad_greetings_are_refused_with_a_reply(name: str, data: bytes, reply: bytes | None, message: str) -> None:
    parser = ExplicitProxyParser()
    with pytest.raises(ProxyProtocolError) as info:
        parser.feed(data)
    assert message in str(info.value)
    if reply is not None:
        assert info.value.reply == reply
    assert info.value.reply  # every refusal tells the client something before the close


def test_socks_refusals_use_rfc1928_codes() -> None:
    with pytest.raises(ProxyProtocolError) as info:
        ExplicitProxyParser().feed(b"\x05\x01\x00" + socks_request(1, bytes(4), 80, command=2))
    assert info.value.reply[:2] == b"\x05\x07"


def test_http_head_too_large_is_431() -> None:
    parser = ExplicitProxyParser()
    parser.feed(b"CONNECT a:1 HTTP/1.1\r\n")
    with pytest.raises(ProxyProtocolError) as info:
        parser.feed(b"x-filler: " + b"a" * (65 * 1024))
    assert info.value.reply.startswith(b"HTTP/1.1 431")


def test_http_connect_like_curl_https_proxy() -> None:
    _, request = parse_all(
        b"CONNECT search-api.prod.svc.cluster.local:8443 HTTP/1.1\r\n",
        b"Host: search-api.prod.svc.cluster.local:8443\r\nUser-Agent: curl/8\r\n\r\n",
    )
    assert request == ProxyRequest(
        kind=ProxyKind.HTTP_CONNECT, host="search-api.prod.svc.cluster.local", port=8443
    )


def test_http_connect_ipv6_literal() -> None:
    _, request = parse_all(b"CONNECT [::1]:8080 HTTP/1.1\r\n\r\n")
    assert request is not None and (request.host, request.port, request.host_is_ip) == ("::1", 8080, True)


def test_absolute_form_is_rewritten_to_origin_form_without_proxy_headers() -> None:
    _, request = parse_all(
        b"POST http://search-api.prod:8080/q?x=1 HTTP/1.1\r\nHost: search-api.prod:8080\r\n"
        b"Proxy-Connection: keep-alive\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert request is not None
    assert (request.kind, request.host, request.port) == (ProxyKind.HTTP_FORWARD, "search-api.prod", 8080)
    assert request.early_data == (
        b"POST /q?x=1 HTTP/1.1\r\nHost: search-api.prod:8080\r\nContent-Length: 4\r\n\r\nbody"
    )
    assert not request.host_is_ip


def test_absolute_form_defaults_to_port_80_and_root_path() -> None:
    _, request = parse_all(b"GET http://web HTTP/1.1\r\n\r\n")
    assert request is not None
    assert (request.host, request.port, request.early_data) == ("web", 80, b"GET / HTTP/1.1\r\n\r\n")


@pytest.mark.parametrize(
    ("kind", "outcome", "expected"),
    [
        (ProxyKind.SOCKS5, Outcome.OK, b"\x05\x00\x00\x01" + bytes(6)),
        (ProxyKind.SOCKS5, Outcome.DENIED, b"\x05\x02\x00\x01" + bytes(6)),
        (ProxyKind.SOCKS5, Outcome.REFUSED, b"\x05\x05\x00\x01" + bytes(6)),
        (ProxyKind.HTTP_CONNECT, Outcome.OK, b"HTTP/1.1 200 Connection established\r\n\r\n"),
        (ProxyKind.HTTP_FORWARD, Outcome.OK, b""),
    ],
)
def test_replies(kind: ProxyKind, outcome: Outcome, expected: bytes) -> None:
    assert reply_for(kind, outcome) == expected


def test_http_failure_replies_close_the_connection() -> None:
    reply = reply_for(ProxyKind.HTTP_FORWARD, Outcome.DENIED)
    assert reply.startswith(b"HTTP/1.1 403") and b"connection: close" in reply


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [("a:1", None, ("a", 1)), ("[::1]:2", None, ("::1", 2)), ("a", 80, ("a", 80)), ("[::1]", 80, ("::1", 80))],
)
def test_split_host_port(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize("text", ["a", "a:", ":80", "a:0", "a:x", "[::1", "[::1]x"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"missing port|bad host|IPv6"):
        split_host_port(text)
