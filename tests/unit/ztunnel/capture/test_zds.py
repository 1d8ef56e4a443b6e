"""ZDS messages: encoding round trips, fd rules, malformed input, and snapshot reconciliation."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ztunnel.capture.errors import ZdsProtocolError
from ztunnel.capture.zds import (
    MAX_MESSAGE_BYTES,
    Ack,
    Add,
    Delete,
    Hello,
    Keep,
    Request,
    SnapshotReconciler,
    SnapshotSent,
    WorkloadInfo,
    decode_request,
    decode_response,
    encode,
)


@pytest.mark.parametrize(
    ("request_", "fds"),
    [
        (Add(uid="pod-1", workload_info=WorkloadInfo("web", "prod", "web-sa")), 1),
        (Add(uid="pod-2"), 1),
        (Keep(uid="pod-3"), 0),
        (Delete(uid="pod-4"), 0),
        (SnapshotSent(), 0),
    ],
)
def test_requests_round_trip(request_: Request, fds: int) -> None:
    assert decode_request(encode(request_), fd_count=fds) == request_


@pytest.mark.parametrize("response", [Hello(), Hello(version=7), Ack(), Ack(error="netns gone")])
def test_responses_round_trip(response: Hello | Ack) -> None:
    assert decode_response(encode(response)) == response


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Add(uid="p"), {"type": "add", "uid": "p"}),
        (Delete(uid="p"), {"type": "del", "uid": "p"}),
        (SnapshotSent(), {"type": "snapshot_sent"}),
        (Hello(), {"type": "hello", "version": 1}),
        (Ack(), {"type": "ack", "error": ""}),
    ],
)
def test_wire_shape(message: Request | Hello | Ack, expected: dict[str, object]) -> None:
    assert json.loads(encode(message)) == expected


@pytest.mark.parametrize(
    ("data", "fds", "truncated", "complaint"),
    [
        (encode(Add(uid="p")), 0, False, "exactly one netns fd, got 0"),
        (encode(Add(uid="p")), 2, False, "exactly one netns fd, got 2"),
        (encode(Delete(uid="p")), 1, False, "del must not carry fds"),
        (encode(SnapshotSent()), 1, False, "snapshot_sent must not carry fds"),
        (b'{"type":"add"}', 1, False, "non-empty string 'uid'"),
        (b'{"type":"del","uid":""}', 0, False, "non-empty string 'uid'"),
        (b'{"type":"add","uid":"p","workload_info":{"name":1}}', 1, False, "workload_info needs"),
        (b'{"type":"evict","uid":"p"}', 0, False, "unknown request type 'evict'"),
        (b"\x08\x01", 0, False, "not JSON"),
        (b"[1]", 0, False, "string 'type'"),
        (encode(SnapshotSent()), 0, True, "truncated"),
    ],
)
def test_bad_requests_are_named(data: bytes, fds: int, truncated: bool, complaint: str) -> None:
    with pytest.raises(ZdsProtocolError, match="bad ZDS message") as info:
        decode_request(data, fd_count=fds, truncated=truncated)
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (b'{"type":"hello"}', "integer 'version'"),
        (b'{"type":"ack","error":3}', "must be a string"),
        (b'{"type":"add","uid":"x"}', "unknown response type 'add'"),
    ],
)
def test_bad_responses_are_named(data: bytes, complaint: str) -> None:
    with pytest.raises(ZdsProtocolError, match=complaint):
        decode_response(data)


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ZdsProtocolError, match="exceeds"):
        encode(Ack(error="x" * MAX_MESSAGE_BYTES))


@pytest.mark.parametrize(
    ("known", "requests", "stale"),
    [
        ({"a", "b", "c"}, [Add(uid="a"), Keep(uid="b")], {"c"}),
        ({"a"}, [Add(uid="x")], {"a"}),
        (set(), [Add(uid="x")], set()),
        ({"a", "b"}, [], {"a", "b"}),
        ({"a"}, [Delete(uid="a"), Add(uid="a")], set()),
    ],
)
def test_snapshot_drops_what_was_not_mentioned(
    known: set[str], requests: list[Request], stale: set[str]
) -> None:
    reconciler = SnapshotReconciler(known)
    for request in requests:
        assert reconciler.observe(request) == frozenset()
    assert reconciler.observe(SnapshotSent()) == stale
    assert reconciler.complete


@pytest.mark.parametrize("late", [Keep(uid="a"), SnapshotSent()])
def test_snapshot_only_requests_after_completion_are_errors(late: Request) -> None:
    reconciler = SnapshotReconciler({"a"})
    reconciler.observe(SnapshotSent())
    with pytest.raises(ZdsProtocolError):
        reconciler.observe(late)


def test_adds_and_deletes_after_the_snapshot_return_nothing_stale() -> None:
    reconciler = SnapshotReconciler(set())
    reconciler.observe(SnapshotSent())
    assert reconciler.observe(Add(uid="n")) == frozenset()
    assert reconciler.observe(Delete(uid="n")) == frozenset()


@given(data=st.binary(max_size=256), fds=st.integers(min_value=0, max_value=3), truncated=st.booleans())
def test_arbitrary_bytes_decode_or_fail_with_a_protocol_error(data: bytes, fds: int, truncated: bool) -> None:
    """Whatever a peer sends, the decoder either returns a request or says what was wrong — nothing else."""
    try:
        decoded = decode_request(data, fd_count=fds, truncated=truncated)
    except ZdsProtocolError:
        return
    assert decode_request(encode(decoded), fd_count=fds) == decoded


@given(
    uid=st.text(min_size=1, max_size=40),
    name=st.text(max_size=20),
    namespace=st.text(max_size=20),
    service_account=st.text(max_size=20),
)
def test_any_add_round_trips(uid: str, name: str, namespace: str, service_account: str) -> None:
    request = Add(uid=uid, workload_info=WorkloadInfo(name, namespace, service_account))
    assert decode_request(encode(request), fd_count=1) == request
