"""HBONE's error taxonomy: what went wrong with a tunnel, and what an operator should check next.

The proxy maps these to what the other side of a copy sees: a :class:`StreamReset` or
:class:`ConnectionLost` becomes a TCP RST towards the application, a :class:`ConnectRejected` carries
the HTTP status the peer answered, and connect-phase failures carry the ``CONNECT`` response flag
that Istio's telemetry reports.
"""

from __future__ import annotations

import trio

from meshcore.errors import MeshError


class HboneError(MeshError):
    """Base of every HBONE failure."""

    response_flag = "CONNECT"


class ConnectTimeout(HboneError):
    """TCP connect plus TLS handshake to a peer's HBONE port did not finish in time."""

    hint = (
        "connection to {peer} did not complete within {timeout}s; is something (a firewall, a "
        "NetworkPolicy) blocking the HBONE port 15008 on the destination?"
    )


class ConnectFailed(HboneError):
    """The TCP connection to a peer's HBONE port could not be opened."""

    hint = "could not reach {peer}; is a ztunnel (or waypoint) listening on the HBONE port 15008 there?"


class HandshakeFailed(HboneError):
    """TLS or the peer-identity check failed, so no tunnel can be trusted on this connection."""

    hint = (
        "the mTLS handshake with {peer} failed ({reason}); check that both sides share a trust root and "
        "that the peer's identity is one the client expects"
    )


class ConnectRejected(HboneError):
    """The peer answered the CONNECT with a status other than 200."""

    hint = "{peer} answered CONNECT {authority} with {status}: {meaning}"

    def __init__(self, message: str, *, status: int, **context: object) -> None:
        super().__init__(message, status=status, **context)
        self.status = status


class ConnectDenied(ConnectRejected):
    """The peer answered 401: its authorization policy denied this source."""

    response_flag = "DENY"


def rejected(status: int, *, peer: str, authority: str, meaning: str) -> ConnectRejected:
    """The right :class:`ConnectRejected` subclass for a non-200 CONNECT answer."""
    kind = ConnectDenied if status == 401 else ConnectRejected
    return kind(
        f"CONNECT {authority} via {peer} failed with {status}",
        status=status,
        peer=peer,
        authority=authority,
        meaning=meaning,
    )


class StreamReset(HboneError, trio.BrokenResourceError):
    """The peer reset the tunnel's HTTP/2 stream; the TCP side should be reset too.

    Also a ``trio.BrokenResourceError``, which is what generic trio stream code expects when the
    other end went away abruptly.
    """

    response_flag = "UR"
    hint = "the peer reset the tunnel (HTTP/2 error code {error_code}); check the peer proxy's log"

    def __init__(self, message: str, *, error_code: int, **context: object) -> None:
        super().__init__(message, error_code=error_code, **context)
        self.error_code = error_code


class ConnectionLost(HboneError, trio.BrokenResourceError):
    """The HTTP/2 connection carrying the tunnel ended before the tunnel did (a BrokenResourceError
    for trio code, like :class:`StreamReset`)."""

    response_flag = "UC"
    hint = (
        "{reason}; check the peer proxy's log and the network between (a connection closed right "
        "after the handshake usually means the peer refused our client certificate)"
    )
