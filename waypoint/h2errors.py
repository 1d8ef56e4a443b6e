"""The waypoint's HTTP/2 errors, named by side (downstream/upstream) with Envoy's response flags.

A pool or router needs to tell apart "the upstream never processed this" (:class:`UpstreamRefused`,
safe to retry), "it broke mid-way" (:class:`UpstreamReset`, :class:`UpstreamConnectionLost`) and "the
client went away" (:class:`DownstreamReset`): the class says which, the ``response_flag`` is what the
access log and ``istio_requests_total`` report.
"""

from __future__ import annotations

import h2.errors

from meshcore.errors import MeshError


class Http2Error(MeshError):
    """Base of the waypoint's HTTP/2 errors."""


class DownstreamReset(Http2Error):
    response_flag = "DR"
    hint = "the client reset stream {stream_id} ({code}); it gave up or was cancelled"


class DownstreamConnectionLost(Http2Error):
    response_flag = "DC"
    hint = "the client's HTTP/2 connection ended ({reason})"


class UpstreamReset(Http2Error):
    response_flag = "UR"
    hint = "the upstream reset stream {stream_id} ({code}); check the upstream's logs"


class UpstreamRefused(UpstreamReset):
    """The upstream never processed the stream (GOAWAY below its id, REFUSED_STREAM): safe to retry."""

    hint = "the upstream refused stream {stream_id} ({code}) without processing it; retry on a new connection"


class UpstreamConnectionLost(Http2Error):
    response_flag = "UC"
    hint = "the upstream HTTP/2 connection ended ({reason}); is the upstream restarting or overloaded?"


class UpstreamProtocolError(Http2Error):
    response_flag = "UPE"
    hint = "the upstream sent invalid HTTP/2 ({reason}); is it really speaking h2c on that port?"


def error_name(code: int) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
