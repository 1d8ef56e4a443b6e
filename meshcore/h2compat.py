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


#: The client connection preface (RFC 9113 §3.4) precedes the server's first inbound frame.
CLIENT_PREFACE_LENGTH = 24
FRAME_HEADER_LENGTH = 9


class FrameLengthGuard:
    """Refuse an oversize frame as soon as its 9-byte header arrives, not after its body.

    ``h2`` checks a frame's length against ``max_inbound_frame_size`` only once the *whole* frame is
    buffered, so a peer announcing a 16 MiB frame and trickling it holds that much memory and stalls the
    connection before the FRAME_SIZE_ERROR. The guard walks the inbound byte stream frame by frame —
    skipping bodies arithmetically, so a 1 MiB DATA frame costs a few integer operations — and reports
    the first announced length above the limit. Feed it exactly the bytes given to ``h2``.
    """

    def __init__(self, max_size: int, *, server_side: bool) -> None:
        self.max_size = max_size
        self._skip = CLIENT_PREFACE_LENGTH if server_side else 0
        self._header = bytearray()

    def oversize(self, data: bytes | bytearray | memoryview) -> int | None:
        """The announced length of the first frame in ``data`` over the limit, or None if all fit."""
        position, end = 0, len(data)
        while position < end:
            if self._skip:
                taken = min(self._skip, end - position)
                self._skip -= taken
                position += taken
                continue
            taken = min(FRAME_HEADER_LENGTH - len(self._header), end - position)
            self._header += data[position:position + taken]
            position += taken
            if len(self._header) == FRAME_HEADER_LENGTH:
                length = int.from_bytes(self._header[:3], "big")
                if length > self.max_size:
                    return length
                self._skip = length
                self._header.clear()
        return None
