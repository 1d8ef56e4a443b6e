"""ClientSession: the applier decides, every exception becomes a NACK, and sync is per connection."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from meshcore.push.protocol import Ack, Nack, Subscribe, make_push
from meshcore.push.session import ClientSession


class Rejected(Exception):
    pass


@attrs.define
class DictApplier:
    """A transactional applier over plain dicts: bodies must be objects with a ``port`` int."""

    state: dict[str, dict[str, Any]] = attrs.field(factory=dict)

    def apply(self, type_name: str, upserts: dict[str, Any], removed: list[str], full: bool) -> None:
        bad = sorted(key for key, body in upserts.items() if not isinstance(body.get("port"), int))
        if bad:
            raise Rejected(f"{type_name} {bad}: port must be an integer")
        table = {} if full else dict(self.state.get(type_name, {}))
        for key in removed:
            table.pop(key, None)
        table.update(upserts)
        self.state[type_name] = table


def _synced(session: ClientSession) -> bool:
    return session.synced


def _session() -> tuple[ClientSession, DictApplier]:
    session = ClientSession.for_types(["service", "workload"])
    assert session.connected() == Subscribe(types=("service", "workload"))
    return session, DictApplier()


def test_a_full_push_is_applied_acked_and_marks_the_type_synced() -> None:
    session, applier = _session()
    push = make_push("service", "v1", "n1", {"a": {"port": 80}}, full=True)
    assert session.handle(push, applier) == Ack(type="service", nonce="n1", version="v1")
    assert applier.state == {"service": {"a": {"port": 80}}}
    assert session.versions == {"service": "v1"} and not session.synced
    session.handle(make_push("workload", "w1", "n2", {}, full=True), applier)
    assert session.synced


def test_a_push_the_applier_rejects_is_nacked_with_its_error_and_changes_nothing() -> None:
    session, applier = _session()
    session.handle(make_push("service", "v1", "n1", {"a": {"port": 80}}, full=True), applier)
    bad = make_push("service", "v2", "n2", {"b": {"port": "http"}}, ["a"], full=False)
    answer = session.handle(bad, applier)
    error = "Rejected: service ['b']: port must be an integer"
    assert answer == Nack(type="service", nonce="n2", error=error)
    assert applier.state == {"service": {"a": {"port": 80}}}
    assert session.versions == {"service": "v1"} and session.rejected == 1
    assert session.last_error == answer.error


@pytest.mark.parametrize(
    ("push", "error"),
    [
        (make_push("route", "v1", "n", {}, full=True), "not subscribed to type 'route'"),
        (make_push("service", "v1", "n", {"a": {"port": 1}}, full=False), "delta push for 'service' before"),
    ],
)
def test_pushes_that_cannot_belong_to_this_connection_are_nacked(push: Any, error: str) -> None:
    session, applier = _session()
    answer = session.handle(push, applier)
    assert isinstance(answer, Nack) and error in answer.error
    assert applier.state == {}


def test_a_reconnect_needs_a_new_full_state_but_keeps_the_versions_in_force() -> None:
    session, applier = _session()
    for type_name in ("service", "workload"):
        session.handle(make_push(type_name, "v1", f"n-{type_name}", {}, full=True), applier)
    assert _synced(session)
    session.connected()
    assert not _synced(session) and session.versions == {"service": "v1", "workload": "v1"}
    delta = make_push("service", "v2", "n3", {"a": {"port": 1}}, full=False)
    assert isinstance(session.handle(delta, applier), Nack)


def test_subscribing_needs_at_least_one_type() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ClientSession.for_types([])
