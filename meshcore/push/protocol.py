"""The push protocol's messages: JSON text frames modelled on delta xDS, no I/O.

A proxy opens one WebSocket to istiod_lite and subscribes by type; istiod_lite answers with pushes that
carry only what changed since the state the proxy last acknowledged (``full`` marks a complete state that
replaces everything of that type, sent on every (re)connect). The proxy answers each push by nonce with
an ACK (applied; its version is now in force) or a NACK (rejected with the error; the previous state stays
in force). This mirrors delta xDS: ``version`` is ``system_version_info``, ``removed`` is
``removed_resources``, a NACK is a request whose ``error_detail`` is set, and nonces tie each answer to
exactly one push so a late answer to an older push can be told apart.

Every parse error names the offending field so a mismatched peer is diagnosed from one log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from meshcore.errors import MeshError

JSON: TypeAlias = Any
"""A decoded JSON value (the body of a pushed resource is an object, but the push layer never looks)."""


class PushProtocolError(MeshError):
    """A frame on the push channel is not a valid push-protocol message."""

    hint = "both ends must speak the same push protocol (DESIGN §3 'Push protocol'); offending frame: {frame}"


@attrs.frozen
class Subscribe:
    """Ask for every resource of ``types``; a later subscribe adds types (xDS resource_names_subscribe)."""

    types: tuple[str, ...]
    kind: str = attrs.field(default="subscribe", init=False)


@attrs.frozen
class Resource:
    """One pushed resource: its key (unique within its type) and its JSON body."""

    key: str
    body: JSON


@attrs.frozen
class Push:
    """Resources of one type that changed (``resources``) or disappeared (``removed``).

    With ``full`` the push is the complete state of the type and ``removed`` is empty: the receiver drops
    whatever it holds of that type and is not in ``resources``.
    """

    type: str
    version: str
    nonce: str
    resources: tuple[Resource, ...]
    removed: tuple[str, ...]
    full: bool
    kind: str = attrs.field(default="push", init=False)

    def upserts(self) -> dict[str, JSON]:
        return {resource.key: resource.body for resource in self.resources}


@attrs.frozen
class Ack:
    """The push with ``nonce`` was applied; ``version`` is now in force for ``type``."""

    type: str
    nonce: str
    version: str
    kind: str = attrs.field(default="ack", init=False)


@attrs.frozen
class Nack:
    """The push with ``nonce`` was rejected with ``error``; the last good state of ``type`` stays."""

    type: str
    nonce: str
    error: str
    kind: str = attrs.field(default="nack", init=False)


Message: TypeAlias = Subscribe | Push | Ack | Nack


def encode(message: Message) -> str:
    """The JSON text frame for ``message`` (compact; keys in a fixed order for readable captures)."""
    if isinstance(message, Subscribe):
        data: dict[str, JSON] = {"kind": "subscribe", "types": list(message.types)}
    elif isinstance(message, Push):
        data = {
            "kind": "push",
            "type": message.type,
            "version": message.version,
            "nonce": message.nonce,
            "resources": [{"key": r.key, "body": r.body} for r in message.resources],
            "removed": list(message.removed),
            "full": message.full,
        }
    elif isinstance(message, Ack):
        data = {"kind": "ack", "type": message.type, "nonce": message.nonce, "version": message.version}
    else:
        data = {"kind": "nack", "type": message.type, "nonce": message.nonce, "error": message.error}
    return json.dumps(data, separators=(",", ":"))


def decode(frame: str | bytes) -> Message:
    """Parse one text frame; raise :class:`PushProtocolError` naming what is wrong."""
    preview = _preview(frame)
    if isinstance(frame, bytes):
        raise PushProtocolError("push messages are JSON text frames, got a binary frame", frame=preview)
    try:
        data = json.loads(frame)
    except ValueError as exc:
        raise PushProtocolError(f"frame is not JSON: {exc}", frame=preview) from None
    if not isinstance(data, Mapping):
        raise PushProtocolError(f"a message is a JSON object, got {type(data).__name__}", frame=preview)
    kind = data.get("kind")
    fields = _Fields(data, str(kind), preview)
    if kind == "subscribe":
        return Subscribe(types=fields.strings("types"))
    if kind == "push":
        push = Push(
            type=fields.string("type"),
            version=fields.string("version"),
            nonce=fields.string("nonce"),
            resources=fields.resources("resources"),
            removed=fields.strings("removed"),
            full=fields.boolean("full"),
        )
        if push.full and push.removed:
            raise PushProtocolError("push message: a full push lists no 'removed' keys", frame=preview)
        both = sorted({r.key for r in push.resources} & set(push.removed))
        if both:
            raise PushProtocolError(f"push message: keys {both} are both updated and removed", frame=preview)
        return push
    if kind == "ack":
        return Ack(type=fields.string("type"), nonce=fields.string("nonce"), version=fields.string("version"))
    if kind == "nack":
        return Nack(type=fields.string("type"), nonce=fields.string("nonce"), error=fields.string("error"))
    raise PushProtocolError(
        f"unknown message kind {kind!r} (expected subscribe, push, ack or nack)", frame=preview
    )


def _preview(frame: str | bytes, limit: int = 120) -> str:
    text = frame if isinstance(frame, str) else repr(frame)
    return text if len(text) <= limit else text[:limit] + "…"


class _Fields:
    """Typed access to a message's fields; each failure says which field of which kind was wrong."""

    def __init__(self, data: Mapping[str, JSON], kind: str, preview: str) -> None:
        self._data = data
        self._kind = kind
        self._preview = preview

    def _fail(self, what: str) -> PushProtocolError:
        return PushProtocolError(f"{self._kind} message: {what}", frame=self._preview)

    def _get(self, name: str) -> JSON:
        if name not in self._data:
            raise self._fail(f"missing field {name!r}")
        return self._data[name]

    def string(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str):
            raise self._fail(f"field {name!r} must be a string, got {type(value).__name__}")
        if name != "error" and not value:
            raise self._fail(f"field {name!r} must not be empty")
        return value

    def boolean(self, name: str) -> bool:
        value = self._get(name)
        if not isinstance(value, bool):
            raise self._fail(f"field {name!r} must be true or false, got {type(value).__name__}")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self._get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self._fail(f"field {name!r} must be a list of non-empty strings")
        return tuple(value)

    def resources(self, name: str) -> tuple[Resource, ...]:
        value = self._get(name)
        if not isinstance(value, list):
            raise self._fail(f"field {name!r} must be a list of {{key, body}} objects")
        result: list[Resource] = []
        seen: set[str] = set()
        for index, item in enumerate(value):
            if not isinstance(item, Mapping) or "body" not in item:
                raise self._fail(f"{name}[{index}] must be an object with 'key' and 'body'")
            key = item.get("key")
            if not isinstance(key, str) or not key:
                raise self._fail(f"{name}[{index}].key must be a non-empty string")
            if key in seen:
                raise self._fail(f"{name}[{index}]: key {key!r} appears twice in one push")
            seen.add(key)
            result.append(Resource(key=key, body=item["body"]))
        return tuple(result)


def make_push(
    type_name: str,
    version: str,
    nonce: str,
    upserts: Mapping[str, JSON],
    removed: Sequence[str] = (),
    *,
    full: bool,
) -> Push:
    """A :class:`Push` with resources in key order (stable frames make pushes diffable in logs)."""
    return Push(
        type=type_name,
        version=version,
        nonce=nonce,
        resources=tuple(Resource(key=key, body=upserts[key]) for key in sorted(upserts)),
        removed=tuple(sorted(removed)),
        full=full,
    )
