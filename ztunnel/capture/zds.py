"""ZDS, the node agent ↔ ztunnel protocol, as a sans-IO core: messages, codec, snapshot bookkeeping.

Semantics follow ztunnel's in-pod protocol (``zds.proto``); the encoding is ours (one JSON object per
SEQPACKET message instead of protobuf):

- ztunnel speaks first: ``hello{version}``, so the agent knows the peer's protocol version.
- The agent then sends its *snapshot*: one ``add{uid, workload_info}`` per pod it knows, each carrying
  exactly one netns fd (SCM_RIGHTS), or ``keep{uid}`` for a pod whose netns it cannot open any more but
  which ztunnel may still hold; then ``snapshot_sent``. ztunnel drops every workload it had that the
  snapshot did not mention (they were deleted while the two were apart).
- After that only ``add`` and ``del{uid}`` flow. ztunnel answers every request with ``ack{error}``;
  an empty error means success, anything else is a nack.

A message that carries fds it should not (or lacks the one it needs) is a protocol error; the caller
closes any fds it received in that case, so nothing leaks.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ztunnel.capture.errors import ZdsProtocolError

ZDS_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024
MAX_FDS_PER_MESSAGE = 4  # we accept one; room for more lets us see (and close) a misbehaving peer's extras


@attrs.frozen
class WorkloadInfo:
    """Who the pod is (ztunnel's ``WorkloadInfo``), so ztunnel can match it before discovery arrives."""

    name: str
    namespace: str
    service_account: str = "default"


@attrs.frozen
class Hello:
    """ztunnel → agent, first message of a connection."""

    version: int = ZDS_VERSION


@attrs.frozen
class Add:
    """agent → ztunnel: capture this pod; its netns fd travels in the same message."""

    uid: str
    workload_info: WorkloadInfo | None = None


@attrs.frozen
class Keep:
    """agent → ztunnel, snapshot only: keep this pod although no fd is sent."""

    uid: str


@attrs.frozen
class Delete:
    """agent → ztunnel: the pod is gone; stop its listeners and close its netns fd."""

    uid: str


@attrs.frozen
class SnapshotSent:
    """agent → ztunnel: the snapshot is complete; reconcile."""


@attrs.frozen
class Ack:
    """ztunnel → agent, one per request; ``error`` empty means accepted."""

    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether ztunnel accepted the request."""
        return not self.error


Request = Add | Keep | Delete | SnapshotSent
Response = Hello | Ack


def _bad(detail: str) -> ZdsProtocolError:
    return ZdsProtocolError(f"bad ZDS message: {detail}", detail=detail)


def encode(message: Request | Response) -> bytes:
    """One message's bytes (the fd, if any, is sent alongside, not in here)."""
    body: dict[str, Any]
    match message:
        case Hello(version=version):
            body = {"type": "hello", "version": version}
        case Add(uid=uid, workload_info=info):
            body = {"type": "add", "uid": uid}
            if info is not None:
                body["workload_info"] = attrs.asdict(info)
        case Keep(uid=uid):
            body = {"type": "keep", "uid": uid}
        case Delete(uid=uid):
            body = {"type": "del", "uid": uid}
        case SnapshotSent():
            body = {"type": "snapshot_sent"}
        case Ack(error=error):
            body = {"type": "ack", "error": error}
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE_BYTES:
        raise _bad(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def _object(data: bytes) -> Mapping[str, Any]:
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"not JSON ({exc})") from exc
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise _bad("expected an object with a string 'type'")
    return body


def _uid(body: Mapping[str, Any]) -> str:
    uid = body.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _bad(f"{body['type']} needs a non-empty string 'uid'")
    return uid


def _workload_info(raw: object) -> WorkloadInfo | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), str) for k in ("name", "namespace")):
        raise _bad("workload_info needs string 'name' and 'namespace'")
    sa = raw.get("service_account", "default")
    if not isinstance(sa, str):
        raise _bad("workload_info.service_account must be a string")
    return WorkloadInfo(name=raw["name"], namespace=raw["namespace"], service_account=sa)


def decode_request(data: bytes, *, fd_count: int, truncated: bool = False) -> Request:
    """Parse an agent request; ``add`` must come with exactly one fd, everything else with none."""
    if truncated:
        raise _bad("message or its control data was truncated")
    body = _object(data)
    kind = body["type"]
    if kind == "add":
        if fd_count != 1:
            raise _bad(f"add must carry exactly one netns fd, got {fd_count}")
        return Add(uid=_uid(body), workload_info=_workload_info(body.get("workload_info")))
    if fd_count:
        raise _bad(f"{kind} must not carry fds, got {fd_count}")
    if kind == "keep":
        return Keep(uid=_uid(body))
    if kind == "del":
        return Delete(uid=_uid(body))
    if kind == "snapshot_sent":
        return SnapshotSent()
    raise _bad(f"unknown request type {kind!r}")


def decode_response(data: bytes) -> Response:
    """Parse what ztunnel sends: ``hello`` or ``ack``."""
    body = _object(data)
    if body["type"] == "hello":
        version = body.get("version")
        if not isinstance(version, int):
            raise _bad("hello needs an integer 'version'")
        return Hello(version=version)
    if body["type"] == "ack":
        error = body.get("error", "")
        if not isinstance(error, str):
            raise _bad("ack 'error' must be a string")
        return Ack(error=error)
    raise _bad(f"unknown response type {body['type']!r}")


class SnapshotReconciler:
    """ztunnel's side of the snapshot phase: which workloads to drop once the snapshot is complete.

    ``known`` are the workloads ztunnel still holds from an earlier agent connection. Every ``add`` or
    ``keep`` before ``snapshot_sent`` marks one as still wanted; ``snapshot_sent`` returns the rest.
    """

    def __init__(self, known: Iterable[str]) -> None:
        self._known = set(known)
        self._mentioned: set[str] = set()
        self.complete = False

    def observe(self, request: Request) -> frozenset[str]:
        """Account for ``request``; returns the stale uids when it completes the snapshot, else empty."""
        match request:
            case Add(uid=uid):
                self._mentioned.add(uid)
            case Keep(uid=uid):
                if self.complete:
                    raise _bad("keep is only valid before snapshot_sent")
                self._mentioned.add(uid)
            case SnapshotSent():
                if self.complete:
                    raise _bad("snapshot_sent received twice on one connection")
                self.complete = True
                return frozenset(self._known - self._mentioned)
            case Delete():
                pass
        return frozenset()
