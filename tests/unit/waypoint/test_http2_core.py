"""The I/O-free parts of the waypoint's HTTP/2: protocol sniffing, header rules, GOAWAY rewriting."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame
import pytest
import trio
import trio.testing

from waypoint.h2core import (
    ends_with_goaway,
    goaway_frame,
    goaway_with_code,
    h2_safe_headers,
    keep_streams_after_goaway,
    request_fields,
    request_head_problem,
    split_pseudo,
    trailers_problem,
)
from waypoint.h2sniff import H2_PREFACE, sniff_protocol, sniff_stream

SNIFF_CASES = [
    (H2_PREFACE, "h2"),
    (H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00", "h2"),
    (H2_PREFACE[:10], None),
    (b"P", None),
    (b"PUT / HTTP/1.1\r\n", "http1"),
    (b"POST /x HTTP/1.1\r\n", "http1"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http1"),
    (b"PRI * HTTP/1.1\r\n", "http1"),
    (b"", "http1"),
    (b"\x16\x03\x01\x02\x00", "http1"),
]


@pytest.mark.parametrize(("first_bytes", "expected"), SNIFF_CASES)
def test_sniff_protocol(first_bytes: bytes, expected: str | None) -> None:
    assert sniff_protocol(first_bytes) == expected


@pytest.mark.parametrize(
    ("sent", "protocol"),
    [(H2_PREFACE + b"rest-of-connection", "h2"), (b"GET / HTTP/1.1\r\n\r\n", "http1"), (b"PR", "http1")],
)
async def test_sniff_stream_reads_byte_by_byte_and_replays_everything(sent: bytes, protocol: str) -> None:
    client, server = trio.testing.memory_stream_pair()
    for index in range(len(sent)):
        await client.send_all(sent[index : index + 1])  # worst case: one byte per read
    await client.send_eof()
    decided, replaying = await sniff_stream(server)
    assert decided == protocol
    received = b""
    while chunk := await replaying.receive_some(7):
        received += chunk
    assert received == sent
    await replaying.send_all(b"answer")
    assert await client.receive_some() == b"answer"


SAFE_HEADER_CASES = [
    (
        "keeps ordinary fields lower-cased",
        [(b"X-A", b"1"), (b"x-b", b"2")],
        False,
        [(b"x-a", b"1"), (b"x-b", b"2")],
    ),
    (
        "drops connection-specific fields",
        [(b"connection", b"keep-alive, x-hop"), (b"keep-alive", b"5"), (b"x-hop", b"1"), (b"x-end", b"2")],
        False,
        [(b"x-end", b"2")],
    ),
    (
        "drops transfer-encoding, upgrade and host",
        [(b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"), (b"host", b"a"), (b"x", b"1")],
        False,
        [(b"x", b"1")],
    ),
    ("keeps te: trailers on requests", [(b"te", b"Trailers")], True, [(b"te", b"trailers")]),
    ("drops any other te", [(b"te", b"gzip")], True, []),
    ("drops te on responses", [(b"te", b"trailers")], False, []),
    (
        "drops stray pseudo-headers",
        [(b":status", b"200"), (b"grpc-status", b"0")],
        False,
        [(b"grpc-status", b"0")],
    ),
]


@pytest.mark.parametrize(
    ("case", "headers", "keep_te", "expected"), SAFE_HEADER_CASES, ids=[c[0] for c in SAFE_HEADER_CASES]
)
def test_h2_safe_headers(
    case: str, headers: list[tuple[bytes, bytes]], keep_te: bool, expected: list[tuple[bytes, bytes]]
) -> None:
    assert h2_safe_headers(headers, keep_te_trailers=keep_te) == expected


def test_split_pseudo_keeps_regular_order_and_duplicates() -> None:
    pseudo, regular = split_pseudo(
        [(b":method", b"GET"), (b":path", b"/"), (b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    )
    assert pseudo == {b":method": b"GET", b":path": b"/"}
    assert regular == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]


def _parse(data: bytes) -> hyperframe.frame.Frame:
    frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
    frame.parse_body(memoryview(data[9 : 9 + length]))
    return frame


def test_goaway_frame_round_trips() -> None:
    frame = _parse(goaway_frame(7, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM))
    assert isinstance(frame, hyperframe.frame.GoAwayFrame)
    assert (frame.last_stream_id, frame.error_code) == (7, h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)


def test_goaway_with_code_rewrites_only_a_trailing_goaway() -> None:
    settings_ack = hyperframe.frame.SettingsFrame(0, flags=["ACK"]).serialize()
    data = settings_ack + goaway_frame(3, h2.errors.ErrorCodes.PROTOCOL_ERROR)
    assert ends_with_goaway(data)
    rewritten = goaway_with_code(data, h2.errors.ErrorCodes.COMPRESSION_ERROR)
    assert rewritten[: len(settings_ack)] == settings_ack
    frame = _parse(rewritten[len(settings_ack) :])
    assert isinstance(frame, hyperframe.frame.GoAwayFrame)
    assert (frame.last_stream_id, frame.error_code) == (3, h2.errors.ErrorCodes.COMPRESSION_ERROR)
    assert not ends_with_goaway(settings_ack)
    assert goaway_with_code(settings_ack, h2.errors.ErrorCodes.COMPRESSION_ERROR) == settings_ack


def _pair() -> tuple[h2.connection.H2Connection, h2.connection.H2Connection]:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    return client, server


def test_a_graceful_goaway_leaves_streams_in_flight_able_to_finish() -> None:
    client, server = _pair()
    keep_streams_after_goaway(client)
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    client.send_headers(1, request, end_stream=True)
    server.receive_data(client.data_to_send())
    events = client.receive_data(goaway_frame(1))
    assert any(isinstance(event, h2.events.ConnectionTerminated) for event in events)
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"done", end_stream=True)
    events = client.receive_data(server.data_to_send())
    assert [type(event) for event in events] == [
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.StreamEnded,
    ]


def test_without_the_fix_h2_refuses_everything_after_a_goaway() -> None:
    """Documents why keep_streams_after_goaway exists (fails once h2 itself handles GOAWAY gracefully)."""
    client, server = _pair()
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/")]
    client.send_headers(1, request, end_stream=True)
    server.receive_data(client.data_to_send())
    client.receive_data(goaway_frame(1))
    server.send_headers(1, [(b":status", b"200")], end_stream=True)
    with pytest.raises(h2.exceptions.ProtocolError):
        client.receive_data(server.data_to_send())


BASE_HEAD = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc"), (b":path", b"/")]
HEAD_CASES = [
    ("plain GET", BASE_HEAD, None),
    (
        "gRPC POST with te",
        [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/pkg.Svc/Call"), (b"te", b"trailers")],
        None,
    ),
    ("CONNECT", [(b":method", b"CONNECT"), (b":authority", b"10.0.0.1:80")], None),
    (
        "extended CONNECT",
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"), (b":path", b"/ws")],
        None,
    ),
    ("CONNECT without authority", [(b":method", b"CONNECT")], "CONNECT without :authority"),
    ("empty path", [*BASE_HEAD[:3], (b":path", b"")], "missing or empty :path"),
    ("missing scheme", [BASE_HEAD[0], *BASE_HEAD[2:]], "missing :scheme"),
    ("duplicate method", [*BASE_HEAD, (b":method", b"PUT")], "duplicate pseudo-header :method"),
    (
        "upper-case",
        [*BASE_HEAD, (b"X-A", b"1")],
        "invalid header name b'X-A' (names must be lower-case tokens)",
    ),
    (
        "space in name",
        [*BASE_HEAD, (b"x a", b"1")],
        "invalid header name b'x a' (names must be lower-case tokens)",
    ),
    ("padded value", [*BASE_HEAD, (b"x-a", b" 1")], "header x-a has surrounding whitespace in its value"),
    ("NUL in value", [*BASE_HEAD, (b"x-a", b"1\x002")], "header x-a has a CR, LF or NUL in its value"),
    (
        "keep-alive",
        [*BASE_HEAD, (b"keep-alive", b"5")],
        "connection-specific header keep-alive is not allowed in HTTP/2",
    ),
]


@pytest.mark.parametrize(("case", "head", "problem"), HEAD_CASES, ids=[c[0] for c in HEAD_CASES])
def test_request_head_problem(case: str, head: list[tuple[bytes, bytes]], problem: str | None) -> None:
    assert request_head_problem(head) == problem


@pytest.mark.parametrize(
    ("trailers", "problem"),
    [
        ([(b"grpc-status", b"0"), (b"grpc-message", b"")], None),
        ([(b":status", b"200")], "pseudo-header :status in trailers"),
        ([(b"Grpc-Status", b"0")], "invalid header name b'Grpc-Status' (names must be lower-case tokens)"),
    ],
)
def test_trailers_problem(trailers: list[tuple[bytes, bytes]], problem: str | None) -> None:
    assert trailers_problem(trailers) == problem


def test_request_fields_take_authority_from_host_and_join_cookies() -> None:
    pseudo, fields = request_fields(
        [
            (b":method", b"GET"),
            (b":path", b"/"),
            (b"host", b"a:1"),
            (b"cookie", b"x=1"),
            (b"y", b"2"),
            (b"cookie", b"z=3"),
        ]
    )
    assert pseudo[b":authority"] == b"a:1"
    assert fields == [(b"cookie", b"x=1; z=3"), (b"y", b"2")]
    pseudo, fields = request_fields([(b":authority", b"svc"), (b"host", b"other")])
    assert pseudo[b":authority"] == b"svc"
    assert fields == []
