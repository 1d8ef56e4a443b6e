"""The DNS codec: round trips and the malformed packets a proxy must survive."""

import struct

import pytest

from ztunnel.dns.message import (
    FLAG_AA,
    FLAG_QR,
    FLAG_RD,
    HEADER,
    DnsFormatError,
    Question,
    RCode,
    RRType,
    build_error,
    build_query,
    build_response,
    decode_name,
    encode_name,
    parse_query,
    parse_response,
)


def test_query_round_trip_lowercases_the_name() -> None:
    query = parse_query(build_query(0x1234, "Search-API.prod.svc.cluster.local", RRType.A))
    assert query.id == 0x1234
    assert query.question == Question("search-api.prod.svc.cluster.local", RRType.A)
    assert query.flags & FLAG_RD


def test_response_carries_only_records_of_the_asked_type() -> None:
    query = parse_query(build_query(7, "web.prod.svc.cluster.local", RRType.AAAA))
    packet = build_response(query, RCode.NOERROR, ["240.240.0.1", "fd00::1"])
    response = parse_response(packet)
    assert response.addresses == ["fd00::1"]
    assert response.authoritative and response.rcode is RCode.NOERROR
    assert struct.unpack_from("!H", packet, 2)[0] & FLAG_QR


def test_any_query_gets_every_address() -> None:
    query = parse_query(build_query(7, "web.prod.svc.cluster.local", RRType.ANY))
    assert parse_response(build_response(query, RCode.NOERROR, ["240.240.0.1", "fd00::1"])).addresses == [
        "240.240.0.1",
        "fd00::1",
    ]


def test_compressed_names_decode() -> None:
    packet = encode_name("svc.cluster.local") + b"\x03web\xc0\x00"
    name, offset = decode_name(packet, len(encode_name("svc.cluster.local")))
    assert (name, offset) == ("web.svc.cluster.local", len(packet))


def _header(qdcount: int = 1, flags: int = 0, ancount: int = 0) -> bytes:
    return HEADER.pack(1, flags, qdcount, ancount, 0, 0)


@pytest.mark.parametrize(
    ("name", "packet", "message"),
    [
        ("shorter than a header", b"\x00\x01\x00", "shorter than a DNS header"),
        ("a response sent as a query", _header(flags=FLAG_QR) + encode_name("a") + b"\x00\x01\x00\x01", "response"),
        ("two questions", _header(qdcount=2) + encode_name("a") + b"\x00\x01\x00\x01", "exactly one question"),
        ("answers in a query", _header(ancount=1) + encode_name("a") + b"\x00\x01\x00\x01", "must not carry"),
        ("name past the end", _header() + b"\x05ab", "past the end"),
        ("pointer loop", _header() + b"\xc0\x0c", "loop"),
        ("truncated pointer", _header() + b"\xc0", "truncated"),
        ("reserved label type", _header() + b"\x80", "label type"),
        ("question without type", _header() + encode_name("a"), "question runs past"),
        ("name over 255 octets", _header() + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01", "255"),
    ],
)
def test_malformed_queries_are_rejected(name: str, packet: bytes, message: str) -> None:
    with pytest.raises(DnsFormatError, match=message):
        parse_query(packet)


def test_label_too_long_to_encode() -> None:
    with pytest.raises(DnsFormatError, match="bad label"):
        encode_name("a" * 64 + ".local")


def test_error_reply_keeps_the_id() -> None:
    response = parse_response(build_error(0xBEEF, RCode.FORMERR))
    assert (response.id, response.rcode, response.question) == (0xBEEF, RCode.FORMERR, None)
    assert not struct.unpack_from("!H", build_error(1, RCode.FORMERR), 2)[0] & FLAG_AA
