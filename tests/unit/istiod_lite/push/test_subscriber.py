"""Subscriber: one push in flight per type, deltas from the last ACKed state, NACKed versions not resent."""

from __future__ import annotations

import pytest

from istiod_lite.push.delta import version_of
from istiod_lite.push.status import SyncState, sync_state
from istiod_lite.push.subscriber import AnswerOutcome, Published, Subscriber, SubscriberProtocolError
from meshcore.push.protocol import Ack, Nack, Push


def _published(**resources: object) -> Published:
    return Published(version=version_of(resources), resources=resources)


V1 = _published(a={"port": 80}, b={"port": 90})
V2 = _published(a={"port": 8080}, b={"port": 90})
V3 = _published(a={"port": 8080})
V4 = _published(a={"port": 1}, c={"port": 2})


def _ack(push: Push) -> Ack:
    return Ack(type=push.type, nonce=push.nonce, version=push.version)


def _nack(push: Push, error: str = "bad port") -> Nack:
    return Nack(type=push.type, nonce=push.nonce, error=error)


def _next(subscriber: Subscriber, catalog: dict[str, Published]) -> Push:
    push = subscriber.next_push(catalog)
    assert push is not None
    return push


def _subscriber(*types: str) -> Subscriber:
    subscriber = Subscriber("node-a", "inst.1")
    subscriber.subscribe(types or ("service",))
    return subscriber


def test_nothing_is_pushed_for_a_type_that_was_never_published() -> None:
    subscriber = _subscriber("service")
    assert subscriber.next_push({"workload": V1}) is None


def test_the_first_push_is_the_full_state_then_deltas_follow_acks() -> None:
    subscriber = _subscriber()
    first = _next(subscriber, {"service": V1})
    assert (first.full, first.upserts(), first.removed) == (True, dict(V1.resources), ())
    assert first.version == V1.version
    assert first.nonce == "inst.1-1"
    assert subscriber.on_answer(_ack(first)) is AnswerOutcome.ACKED
    assert subscriber.next_push({"service": V1}) is None  # up to date

    second = _next(subscriber, {"service": V2})
    assert (second.full, second.upserts(), second.removed) == (False, {"a": {"port": 8080}}, ())
    subscriber.on_answer(_ack(second))
    third = _next(subscriber, {"service": V3})
    assert (third.full, third.upserts(), third.removed) == (False, {}, ("b",))


def test_only_one_push_per_type_is_in_flight_and_the_next_one_coalesces_to_the_newest() -> None:
    subscriber = _subscriber()
    first = _next(subscriber, {"service": V1})
    assert subscriber.next_push({"service": V2}) is None  # still waiting for the answer to V1
    assert subscriber.next_push({"service": V3}) is None
    subscriber.on_answer(_ack(first))
    catch_up = _next(subscriber, {"service": V4})  # V2 and V3 were never sent: one delta V1 -> V4
    assert catch_up.version == V4.version
    assert (catch_up.upserts(), catch_up.removed) == ({"a": {"port": 1}, "c": {"port": 2}}, ("b",))


def test_types_are_independent() -> None:
    subscriber = _subscriber("service", "workload")
    service = _next(subscriber, {"service": V1, "workload": V2})
    workload = _next(subscriber, {"service": V1, "workload": V2})
    assert (service.type, workload.type) == ("service", "workload")
    assert subscriber.next_push({"service": V1, "workload": V2}) is None


def test_after_a_nack_the_version_is_not_resent_and_the_next_delta_starts_from_the_last_ack() -> None:
    subscriber = _subscriber()
    subscriber.on_answer(_ack(_next(subscriber, {"service": V1})))
    rejected = _next(subscriber, {"service": V2})
    assert subscriber.on_answer(_nack(rejected)) is AnswerOutcome.NACKED
    assert subscriber.next_push({"service": V2}) is None  # the proxy said no to exactly this

    retry = _next(subscriber, {"service": V3})
    assert (retry.upserts(), retry.removed) == ({"a": {"port": 8080}}, ("b",))  # from V1, not from V2
    (status,) = subscriber.status()
    assert (status.acked_version, status.nack_version) == (V1.version, V2.version)
    assert status.nack_error == "bad port"
    subscriber.on_answer(_ack(retry))
    (status,) = subscriber.status()
    assert (status.acked_version, status.nack_version, status.nack_error) == (V3.version, None, None)


def test_a_nacked_full_push_is_followed_by_another_full_push() -> None:
    subscriber = _subscriber()
    subscriber.on_answer(_nack(_next(subscriber, {"service": V1})))
    assert _next(subscriber, {"service": V2}).full


@pytest.mark.parametrize(
    "answer",
    [Ack(type="service", nonce="inst.1-0", version="x"), Nack(type="service", nonce="old", error="e")],
)
def test_an_answer_to_a_push_no_longer_in_flight_is_stale_and_ignored(answer: Ack | Nack) -> None:
    subscriber = _subscriber()
    push = _next(subscriber, {"service": V1})
    assert subscriber.on_answer(answer) is AnswerOutcome.STALE
    assert subscriber.status()[0].in_flight
    assert subscriber.on_answer(_ack(push)) is AnswerOutcome.ACKED


def test_answers_that_cannot_belong_to_any_push_are_protocol_errors() -> None:
    subscriber = _subscriber()
    push = _next(subscriber, {"service": V1})
    with pytest.raises(SubscriberProtocolError, match="never subscribed"):
        subscriber.on_answer(Ack(type="workload", nonce=push.nonce, version=push.version))
    with pytest.raises(SubscriberProtocolError, match="names version 'v-other'") as info:
        subscriber.on_answer(Ack(type="service", nonce=push.nonce, version="v-other"))
    assert "proxy node-a must answer" in str(info.value)


def test_subscribing_again_adds_only_new_types() -> None:
    subscriber = _subscriber("service")
    assert subscriber.subscribe(["service", "workload", "workload"]) == ("workload",)
    assert subscriber.types == ("service", "workload")


@pytest.mark.parametrize(
    ("script", "published", "expected"),
    [
        ([], V1, SyncState.STALE),  # never sent
        (["send"], V1, SyncState.STALE),  # in flight
        (["send", "ack"], V1, SyncState.SYNCED),
        (["send", "ack"], V2, SyncState.STALE),  # a newer version exists
        (["send", "nack"], V1, SyncState.NACKED),
        (["send", "ack", "send2", "nack"], V2, SyncState.NACKED),
        (["send", "nack", "send2"], V2, SyncState.STALE),  # a newer push is on its way
        (["send", "nack", "send2", "ack"], V2, SyncState.SYNCED),
    ],
)
def test_proxy_status_verdicts(script: list[str], published: Published, expected: SyncState) -> None:
    subscriber = _subscriber()
    push: Push | None = None
    for step in script:
        if step in ("send", "send2"):
            push = _next(subscriber, {"service": V1 if step == "send" else V2})
        elif step == "ack":
            assert push is not None
            subscriber.on_answer(_ack(push))
        else:
            assert push is not None
            subscriber.on_answer(_nack(push))
    (status,) = subscriber.status()
    assert sync_state(status, published.version) is expected
