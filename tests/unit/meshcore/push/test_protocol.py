"""The push protocol's frames: round trips, and a clear error for every malformed message."""

from __future__ import annotations

import json

import pytest

from meshcore.push.protocol import (
    Ack,
    Message,
    Nack,
    Push,
    PushProtocolError,
    Resource,
    Subscribe,
    decode,
    encode,
    make_push,
)

PUSH = Push(
    type="service",
    version="v2",
    nonce="n-1",
    resources=(Resource(key="prod/search", body={"name": "search", "ports": [80]}),),
    removed=("prod/cart",),
    full=False,
)


@pytest.mark.parametrize(
    "message",
    [
        Subscribe(types=("workload", "service")),
        PUSH,
        make_push("workload", "v1", "n-2", {"b": {}, "a": {"x": 1}}, full=True),
        Ack(type="service", nonce="n-1", version="v2"),
        Nack(type="service", nonce="n-1", error="service push rejected: bad VIP"),
        Nack(type="service", nonce="n-1", error=""),
    ],
)
def test_every_message_survives_a_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


def test_the_push_frame_has_the_documented_shape() -> None:
    assert json.loads(encode(PUSH)) == {
        "kind": "push",
        "type": "service",
        "version": "v2",
        "nonce": "n-1",
        "resources": [{"key": "prod/search", "body": {"name": "search", "ports": [80]}}],
        "removed": ["prod/cart"],
        "full": False,
    }


def test_make_push_orders_resources_and_removals_by_key() -> None:
    push = make_push("service", "v1", "n", {"b": 2, "a": 1}, ["z", "y"], full=False)
    assert [r.key for r in push.resources] == ["a", "b"] and push.removed == ("y", "z")
    assert push.upserts() == {"a": 1, "b": 2}


_PUSH_FIELDS = {
    "kind": "push", "type": "service", "version": "v1", "nonce": "n", "resources": [], "removed": []
}
_ONE_KEY = [{"key": "a", "body": 1}]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (b'{"kind":"ack"}', "binary frame"),
        ("{not json", "frame is not JSON"),
        ("[1, 2]", "a message is a JSON object, got list"),
        ('{"kind": "hello"}', "unknown message kind 'hello'"),
        ('{"types": ["service"]}', "unknown message kind None"),
        ('{"kind": "subscribe"}', "subscribe message: missing field 'types'"),
        ('{"kind": "subscribe", "types": "service"}', "field 'types' must be a list of non-empty strings"),
        ('{"kind": "subscribe", "types": [""]}', "field 'types' must be a list of non-empty strings"),
        ('{"kind": "ack", "type": "service", "nonce": "n"}', "ack message: missing field 'version'"),
        ('{"kind": "ack", "type": "service", "nonce": 7, "version": "v"}', "field 'nonce' must be a string"),
        ('{"kind": "ack", "type": "service", "nonce": "", "version": "v"}', "'nonce' must not be empty"),
        ('{"kind": "nack", "type": "service", "nonce": "n"}', "nack message: missing field 'error'"),
        (json.dumps(_PUSH_FIELDS), "push message: missing field 'full'"),
        (json.dumps({**_PUSH_FIELDS, "full": "yes"}), "field 'full' must be true or false, got str"),
        (json.dumps({**_PUSH_FIELDS, "full": False, "resources": {}}), "field 'resources' must be a list"),
        (json.dumps({**_PUSH_FIELDS, "full": False, "resources": [{"key": "a"}]}), "resources[0] must be an"),
        (json.dumps({**_PUSH_FIELDS, "full": False, "resources": [{"key": 1, "body": 2}]}), "[0].key must"),
        (
            json.dumps({**_PUSH_FIELDS, "full": False, "resources": [{"key": "a", "body": 1}] * 2}),
            "resources[1]: key 'a' appears twice",
        ),
        (json.dumps({**_PUSH_FIELDS, "full": True, "removed": ["a"]}), "a full push lists no 'removed' keys"),
        (
            json.dumps({**_PUSH_FIELDS, "full": False, "resources": _ONE_KEY, "removed": ["a"]}),
            "keys ['a'] are both updated and removed",
        ),
    ],
)
def test_a_malformed_frame_is_rejected_naming_what_is_wrong(frame: str | bytes, expected: str) -> None:
    with pytest.raises(PushProtocolError) as info:
        decode(frame)
    assert expected in str(info.value)
    assert "hint: both ends must speak the same push protocol" in str(info.value)


def test_the_error_quotes_a_long_frame_only_in_part() -> None:
    frame = json.dumps({"kind": "nope", "padding": "x" * 500})
    with pytest.raises(PushProtocolError) as info:
        decode(frame)
    assert len(str(info.value)) < 400 and "…" in str(info.value)
