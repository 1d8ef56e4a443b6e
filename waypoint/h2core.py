"""The I/O-free rules of the waypoint's HTTP/2: header shapes, GOAWAY frames, and fixes around h2.

Nothing here touches a socket or a clock; the trio engine in :mod:`waypoint.h2connection` calls in.
"""

from __future__ import annotations

import re

import h2.connection
import h2.errors
import hpack.exceptions
import hyperframe.frame

import meshcore.h2compat  # noqa: F401  (applies the DATA-frame repr fix, DESIGN §7)
from waypoint.messages import HOP_BY_HOP, Headers

_GOAWAY_FRAME_LEN = 9 + 8


def h2_safe_headers(headers: Headers, *, keep_te_trailers: bool) -> Headers:
    """Lower-cased headers without connection-specific fields, which HTTP/2 forbids (RFC 9113 §8.2.2).

    ``te: trailers`` is the one exception a request may carry (gRPC servers require it).
    """
    result: Headers = []
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == b"connection"
        for token in value.split(b",")
        if token.strip()
    }
    for key, value in headers:
        name = key.lower()
        if name.startswith(b":") or name == b"host":
            continue
        if name == b"te":
            if keep_te_trailers and value.strip().lower() == b"trailers":
                result.append((b"te", b"trailers"))
            continue
        if name in HOP_BY_HOP or name in named:
            continue
        result.append((name, value))
    return result


def split_pseudo(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], Headers]:
    """Pseudo-headers as a dict and the regular fields in order (h2 has already validated the block)."""
    pseudo: dict[bytes, bytes] = {}
    regular: Headers = []
    for key, value in headers:
        if key.startswith(b":"):
            pseudo.setdefault(key, value)
        else:
            regular.append((key, value))
    return pseudo, regular


def goaway_with_code(data: bytes, code: int) -> bytes:
    """Rewrite the error code of the GOAWAY h2 queued as the last frame of ``data``.

    h2 answers an undecodable HPACK block with PROTOCOL_ERROR; RFC 9113 §4.3 asks for
    COMPRESSION_ERROR. h2 serialises its GOAWAY without debug data, i.e. as the final 17 bytes, type 7.
    Anything else is returned unchanged.
    """
    if not ends_with_goaway(data):
        return data
    return data[:-4] + code.to_bytes(4, "big")


def keep_streams_after_goaway(conn: h2.connection.H2Connection) -> None:
    """Let streams below a peer's GOAWAY finish, as RFC 9113 §6.8 intends.

    h2's connection state machine closes on *any* received GOAWAY, after which it refuses to send or
    receive anything, so a graceful NO_ERROR GOAWAY would kill the requests in flight. This instance
    keeps its open state instead; refusing new streams (and failing on an error GOAWAY) is the
    engine's job.
    """
    machine = conn.state_machine
    table = dict(machine._transitions)
    states = h2.connection.ConnectionState
    goaway = h2.connection.ConnectionInputs.RECV_GOAWAY
    for state in (states.IDLE, states.CLIENT_OPEN, states.SERVER_OPEN):
        table[(state, goaway)] = (None, state)
    machine._transitions = table


def goaway_frame(last_stream_id: int, code: int = h2.errors.ErrorCodes.NO_ERROR) -> bytes:
    """A serialised GOAWAY built around h2: its own NO_ERROR GOAWAY would close the connection at once,
    and it sends none at all for a bad client preface."""
    frame = hyperframe.frame.GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = code
    return bytes(frame.serialize())


def ends_with_goaway(data: bytes) -> bool:
    """Whether h2's output ends with the 17-byte GOAWAY it serialises (no debug data)."""
    return len(data) >= _GOAWAY_FRAME_LEN and data[-_GOAWAY_FRAME_LEN:][:4] == b"\x00\x00\x08\x07"


def is_hpack_failure(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, hpack.exceptions.HPACKError) and not isinstance(
        cause, hpack.exceptions.OversizedHeaderListError
    )


# -- request heads (RFC 9113 §8.2, §8.3.1) ---------------------------------------------------------------

REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# RFC 9110 token characters, lower-case only (RFC 9113 §8.2.1); one regex call per field keeps this
# off the profile of a busy connection.
_NAME = re.compile(rb":?[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE = re.compile(rb"[\r\n\x00]")


def _field_problem(name: bytes, value: bytes) -> str | None:
    if _NAME.fullmatch(name) is None:
        return f"invalid header name {name!r} (names must be lower-case tokens)"
    if _BAD_VALUE.search(value) is not None:
        return f"header {name.decode('latin-1')} has a CR, LF or NUL in its value"
    if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
        return f"header {name.decode('latin-1')} has surrounding whitespace in its value"
    return None


def request_head_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request header block is malformed, or None. Malformed means a *stream* error (§8.1.1).

    h2's own validation would turn the same findings into a connection error and end every other
    request on the connection, so the server validates here and resets only the offending stream.
    """
    pseudo: dict[bytes, bytes] = {}
    regular_seen = False
    for name, value in headers:
        problem = _field_problem(name, value)
        if problem:
            return problem
        if name.startswith(b":"):
            if regular_seen:
                return f"pseudo-header {name.decode('latin-1')} after a regular header"
            if name not in REQUEST_PSEUDO:
                return f"unknown request pseudo-header {name.decode('latin-1')}"
            if name in pseudo:
                return f"duplicate pseudo-header {name.decode('latin-1')}"
            pseudo[name] = value
            continue
        regular_seen = True
        if name in CONNECTION_SPECIFIC:
            return f"connection-specific header {name.decode('latin-1')} is not allowed in HTTP/2"
        if name == b"te" and value.lower() != b"trailers":
            return "te header other than 'trailers'"
    method = pseudo.get(b":method")
    if not method:
        return "missing :method"
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            return "CONNECT must carry only :method and :authority"
        if not pseudo.get(b":authority"):
            return "CONNECT without :authority"
        return None
    if not pseudo.get(b":scheme"):
        return "missing :scheme"
    if not pseudo.get(b":path"):
        return "missing or empty :path"
    return None


def trailers_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a trailer block is malformed (pseudo-headers or bad fields), or None."""
    for name, value in headers:
        if name.startswith(b":"):
            return f"pseudo-header {name.decode('latin-1')} in trailers"
        problem = _field_problem(name, value)
        if problem:
            return problem
    return None


def request_fields(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], Headers]:
    """Pseudo-headers and the regular fields as the router sees them.

    ``:authority`` falls back to ``host``, which is dropped (the authority carries it, as in
    :mod:`waypoint.http1`); the cookie crumbs HTTP/2 allows are joined with ``"; "`` so an HTTP/1.1
    upstream gets one ``cookie`` header (RFC 9113 §8.2.3).
    """
    pseudo, regular = split_pseudo(headers)
    host = next((value for name, value in regular if name == b"host"), None)
    if not pseudo.get(b":authority") and host is not None:
        pseudo[b":authority"] = host
    cookies = [value for name, value in regular if name == b"cookie"]
    fields: Headers = []
    for name, value in regular:
        if name == b"host":
            continue
        if name == b"cookie":
            if cookies:
                fields.append((b"cookie", b"; ".join(cookies)))
                cookies = []
            continue
        fields.append((name, value))
    return pseudo, fields
