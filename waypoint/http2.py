"""HTTP/2 on both sides of the waypoint: the public names, in one place like :mod:`waypoint.http1`.

* :func:`serve_http2` — prior-knowledge h2c server on any trio stream (the inner stream of a tunnel);
* :class:`Http2ClientConnection` / :func:`open_http2_client` — multiplexed h2c towards upstreams;
* :func:`sniff_protocol` / :func:`sniff_stream` — pick HTTP/2 or HTTP/1.1 per connection.

Behind them: :mod:`waypoint.h2connection` (the trio engine both sides share: single writer, flow
control acknowledged on consumption), :mod:`waypoint.h2core` (I/O-free rules: request validation,
header shaping, GOAWAY frames, fixes around h2), :mod:`waypoint.h2errors` (errors with response flags).
"""

from __future__ import annotations

from waypoint.h2client import Http2ClientConnection, UpstreamBody, open_http2_client
from waypoint.h2errors import (
    DownstreamConnectionLost,
    DownstreamReset,
    Http2Error,
    UpstreamConnectionLost,
    UpstreamProtocolError,
    UpstreamRefused,
    UpstreamReset,
)
from waypoint.h2server import Http2ServerConnection, serve_http2
from waypoint.h2sniff import H2_PREFACE, PrefixedStream, sniff_protocol, sniff_stream

__all__ = [
    "H2_PREFACE",
    "DownstreamConnectionLost",
    "DownstreamReset",
    "Http2ClientConnection",
    "Http2Error",
    "Http2ServerConnection",
    "PrefixedStream",
    "UpstreamBody",
    "UpstreamConnectionLost",
    "UpstreamProtocolError",
    "UpstreamRefused",
    "UpstreamReset",
    "open_http2_client",
    "serve_http2",
    "sniff_protocol",
    "sniff_stream",
]
