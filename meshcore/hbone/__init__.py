"""HBONE: mTLS HTTP/2 CONNECT tunnels between mesh proxies (DESIGN §3).

* :mod:`~meshcore.hbone.connect` — the CONNECT contract, sans-IO (validate, build, status mapping)
* :mod:`~meshcore.hbone.connection` — the trio driver of one HTTP/2 connection
* :mod:`~meshcore.hbone.h2setup` — HBONE's h2 settings and the two adjustments h2 needs
* :mod:`~meshcore.hbone.h2stream` — one tunnel as a ``trio.abc.HalfCloseableStream``
* :mod:`~meshcore.hbone.server` — the terminating side (listener, TLS, per-stream handler)
* :mod:`~meshcore.hbone.pool` — the originating side (keyed connection pool)
* :mod:`~meshcore.hbone.copy` — bidirectional copy with half-close and reset propagation
"""

from meshcore.hbone.connect import ConnectRequest, ConnectResponse, ConnectStatus, Rejection
from meshcore.hbone.copy import CopyStats, copy_bidirectional, reset_stream
from meshcore.hbone.errors import (
    ConnectDenied,
    ConnectFailed,
    ConnectionLost,
    ConnectRejected,
    ConnectTimeout,
    HandshakeFailed,
    HboneError,
    StreamReset,
)
from meshcore.hbone.h2stream import HboneStream
from meshcore.hbone.pool import HbonePool, PoolKey, tcp_connector
from meshcore.hbone.server import HboneServer, Respond

__all__ = [
    "ConnectDenied",
    "ConnectFailed",
    "ConnectRejected",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectStatus",
    "ConnectTimeout",
    "ConnectionLost",
    "CopyStats",
    "HandshakeFailed",
    "HboneError",
    "HbonePool",
    "HboneServer",
    "HboneStream",
    "PoolKey",
    "Rejection",
    "Respond",
    "StreamReset",
    "copy_bidirectional",
    "reset_stream",
    "tcp_connector",
]
