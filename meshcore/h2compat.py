"""The one place the mesh adjusts the ``h2``/``hyperframe`` libraries for speed.

h2 formats ``repr(frame)`` for its trace log on every received frame even when logging is off, and a
DataFrame's repr hex-encodes its payload: about 30 % of a tunnel's CPU (DESIGN §7). Nothing reads that
repr but debug logging, so DATA frames are described by length instead. Both HTTP/2 users — the HBONE
tunnel (outer connection) and the waypoint's inner HTTP/2 — import this module, so the patch is
applied once, whichever loads first.
"""

from __future__ import annotations

import hyperframe.frame


def _cheap_data_repr(self: hyperframe.frame.DataFrame) -> str:
    return f"<{len(self.data)} bytes>"


def quiet_data_frame_repr() -> None:
    """Idempotent; runs at import."""
    hyperframe.frame.DataFrame._body_repr = _cheap_data_repr  # type: ignore[method-assign,assignment]


quiet_data_frame_repr()
