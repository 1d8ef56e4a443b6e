"""How HBONE configures ``h2``: the settings of DESIGN §3 and the two places h2 needs adjusting.

Kept apart from the connection driver because it is the part that depends on h2's internals (the
DataFrame repr and the GOAWAY state transition); an h2 upgrade should only need a look here.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hyperframe.frame

import meshcore.h2compat  # noqa: F401  (applies the DATA-frame repr fix, DESIGN §7)

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
SERVER_MAX_CONCURRENT_STREAMS = 200
PING_INTERVAL = 10.0
PING_TIMEOUT = 20.0
FLUSH_TIMEOUT = 1.0
# A 1 MiB header block must still be *decoded* (to keep HPACK state in sync) so it can be refused on
# its own stream; past this, decoding itself is the attack and the connection goes (GOAWAY).
HPACK_DECODE_LIMIT = 4 * 1024 * 1024
RECEIVE_SIZE = 256 * 1024
# Senders park while this much output is queued for the socket: bounds memory per connection.
WRITE_HIGH_WATER = 2 * 1024 * 1024

_DEFAULT_WINDOW = 65535


class DrainableH2Connection(h2.connection.H2Connection):
    """h2 treats any GOAWAY, sent or received, as the end of the connection: its state machine goes
    to CLOSED and refuses even DATA for streams already open. HTTP/2 (RFC 9113 §6.8) and every peer
    we meet (Envoy, ztunnel) mean a NO_ERROR GOAWAY as "no *new* streams": the ones in flight finish.
    So after a NO_ERROR GOAWAY the state machine is put back to OPEN, and this class refuses new
    streams itself (``HboneConnection.usable``). Done here, in the frame handler, so frames that
    follow the GOAWAY in the same read are still accepted.
    """

    def _receive_goaway_frame(
        self, frame: hyperframe.frame.GoAwayFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        before = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == h2.errors.ErrorCodes.NO_ERROR:
            self.state_machine.state = before
        return frames, events

    def send_goaway_keep_open(self) -> None:
        """Our own NO_ERROR GOAWAY, after which open streams keep flowing."""
        before = self.state_machine.state
        self.close_connection(h2.errors.ErrorCodes.NO_ERROR)
        self.state_machine.state = before


def _config(client_side: bool) -> h2.config.H2Configuration:
    # Bytes headers on the server: connect.py validates and decodes them so a malformed request is a
    # stream error (400), not an h2 ProtocolError that would GOAWAY every tunnel on the connection.
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_inbound_headers=client_side,
        normalize_inbound_headers=client_side,
    )


def new_h2_connection(client_side: bool) -> DrainableH2Connection:
    """An h2 connection with HBONE's settings, the connection window raised, and the preface queued."""
    conn = DrainableH2Connection(config=_config(client_side))
    settings: dict[h2.settings.SettingCodes, int] = {
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
    }
    if not client_side:
        settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = SERVER_MAX_CONCURRENT_STREAMS
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
    conn.max_inbound_frame_size = MAX_FRAME_SIZE
    conn.decoder.max_header_list_size = HPACK_DECODE_LIMIT
    conn.initiate_connection()
    # The connection window is not a SETTING: it starts at 64 KiB and only WINDOW_UPDATE raises it.
    conn.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
    return conn
