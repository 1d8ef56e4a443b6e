"""Sans-IO parsing of the explicit outbound proxy's first bytes (port 15080, proxy mode).

In proxy mode nothing captures an app's traffic, so apps reach the mesh the way they already reach a
corporate proxy: ``ALL_PROXY=socks5h://…`` (SOCKS5 with remote DNS, which is what lets
``svc.ns.svc.cluster.local`` resolve through the mesh), ``https_proxy`` (HTTP ``CONNECT``) or
``http_proxy`` (HTTP absolute-form requests). This module turns the bytes a client sends first into
one :class:`ProxyRequest` — where the client wants to go and what to answer — and never touches a
socket, so every malformed greeting can be tested as a table.

Feed bytes with :meth:`ExplicitProxyParser.feed`; it returns ``None`` until it has a whole request,
then a :class:`ProxyRequest` or raises :class:`ProxyProtocolError` carrying the bytes to send back
before closing (a SOCKS5 refusal, an HTTP 400/405).
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

from meshcore.errors import MeshError

SOCKS_VERSION = 5
SOCKS_NO_AUTH = 0x00
SOCKS_NO_ACCEPTABLE_METHOD = 0xFF
SOCKS_CMD_CONNECT = 0x01
SOCKS_ATYP_IPV4 = 0x01
SOCKS_ATYP_DOMAIN = 0x03
SOCKS_ATYP_IPV6 = 0x04

# RFC 1928 §6 reply codes used by the proxy.
SOCKS_REPLY_SUCCEEDED = 0x00
SOCKS_REPLY_GENERAL_FAILURE = 0x01
SOCKS_REPLY_NOT_ALLOWED = 0x02
SOCKS_REPLY_HOST_UNREACHABLE = 0x04
SOCKS_REPLY_CONNECTION_REFUSED = 0x05
SOCKS_REPLY_COMMAND_NOT_SUPPORTED = 0x07
SOCKS_REPLY_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

MAX_HTTP_HEAD = 64 * 1024


class ProxyKind(enum.Enum):
    SOCKS5 = "socks5"
    HTTP_CONNECT = "http-connect"
    HTTP_FORWARD = "http-forward"


class Outcome(enum.Enum):
    """How the outbound attempt ended, mapped to each protocol's own reply by :func:`reply_for`."""

    OK = "ok"
    DENIED = "denied"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    FAILED = "failed"


class ProxyProtocolError(MeshError):
    """The client's greeting cannot be served; ``reply`` is what to send before closing."""

    hint = "the explicit proxy speaks SOCKS5 (no auth), HTTP CONNECT and HTTP absolute-form requests"

    def __init__(self, message: str, reply: bytes) -> None:
        super().__init__(message)
        self.reply = reply


@attrs.frozen(kw_only=True)
class ProxyRequest:
    """Where the client wants to go.

    ``host`` is an IP literal or a name (SOCKS5 domain, HTTP authority) that the proxy resolves
    through mesh state first. ``early_data`` holds bytes the client sent after its request (for
    absolute-form HTTP: the rewritten request head and any body bytes) that must be forwarded to the
    destination before anything else.
    """

    kind: ProxyKind
    host: str
    port: int
    early_data: bytes = b""

    @property
    def host_is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def socks5_reply(code: int) -> bytes:
    """A SOCKS5 reply with a zero IPv4 bound address (clients ignore BND.ADDR for CONNECT)."""
    return bytes([SOCKS_VERSION, code, 0x00, SOCKS_ATYP_IPV4, 0, 0, 0, 0, 0, 0])


_SOCKS_CODES = {
    Outcome.OK: SOCKS_REPLY_SUCCEEDED,
    Outcome.DENIED: SOCKS_REPLY_NOT_ALLOWED,
    Outcome.UNREACHABLE: SOCKS_REPLY_HOST_UNREACHABLE,
    Outcome.REFUSED: SOCKS_REPLY_CONNECTION_REFUSED,
    Outcome.FAILED: SOCKS_REPLY_GENERAL_FAILURE,
}
_HTTP_STATUS = {
    Outcome.OK: b"200 Connection established",
    Outcome.DENIED: b"403 Forbidden",
    Outcome.UNREACHABLE: b"503 Service Unavailable",
    Outcome.REFUSED: b"502 Bad Gateway",
    Outcome.FAILED: b"502 Bad Gateway",
}


def reply_for(kind: ProxyKind, outcome: Outcome) -> bytes:
    """What the client must read once the outbound attempt has an outcome.

    Absolute-form HTTP gets no reply on success: the destination's own response is the reply.
    """
    if kind is ProxyKind.SOCKS5:
        return socks5_reply(_SOCKS_CODES[outcome])
    if kind is ProxyKind.HTTP_FORWARD and outcome is Outcome.OK:
        return b""
    status = _HTTP_STATUS[outcome]
    if outcome is Outcome.OK:
        return b"HTTP/1.1 " + status + b"\r\n\r\n"
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _http_error(status: bytes, message: str) -> ProxyProtocolError:
    body = message.encode() + b"\n"
    reply = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\ncontent-length: "
        + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )
    return ProxyProtocolError(message, reply)


def split_host_port(authority: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` → (host, port); raises ValueError on anything else."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 literal in {authority!r}")
        host, rest = authority[1:end], authority[end + 1 :]
        if not rest and default_port is not None:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"missing port in {authority!r}")
        port_text = rest[1:]
    elif ":" in authority:
        host, _, port_text = authority.rpartition(":")
    elif default_port is not None:
        return authority, default_port
    else:
        raise ValueError(f"missing port in {authority!r}")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad host:port {authority!r}")
    return host, int(port_text)


class ExplicitProxyParser:
    """Accumulates the client's first bytes and decides which protocol it speaks."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._socks_greeted = False
        self.greeting_reply = b""
        """Bytes to send right away (the SOCKS5 method selection) before the request arrives."""

    def feed(self, data: bytes) -> ProxyRequest | None:
        self._buffer += data
        if not self._buffer:
            return None
        if self._buffer[0] == SOCKS_VERSION:
            return self._feed_socks()
        return self._feed_http()

    # SOCKS5 (RFC 1928), no authentication, CONNECT only.
    def _feed_socks(self) -> ProxyRequest | None:
        buf = self._buffer
        if not self._socks_greeted:
            if len(buf) < 2 or len(buf) < 2 + buf[1]:
                return None
            methods = bytes(buf[2 : 2 + buf[1]])
            del buf[: 2 + len(methods)]
            if SOCKS_NO_AUTH not in methods:
                raise ProxyProtocolError(
                    f"SOCKS5 client offered no acceptable auth method (offered {list(methods)}, need 0)",
                    bytes([SOCKS_VERSION, SOCKS_NO_ACCEPTABLE_METHOD]),
                )
            self._socks_greeted = True
            self.greeting_reply = bytes([SOCKS_VERSION, SOCKS_NO_AUTH])
        if len(buf) < 5:
            return None
        version, command, _reserved, atyp = buf[0], buf[1], buf[2], buf[3]
        if version != SOCKS_VERSION:
            raise ProxyProtocolError(
                f"SOCKS request version {version}, expected 5", socks5_reply(SOCKS_REPLY_GENERAL_FAILURE)
            )
        if command != SOCKS_CMD_CONNECT:
            raise ProxyProtocolError(
                f"SOCKS5 command {command} not supported (only CONNECT)",
                socks5_reply(SOCKS_REPLY_COMMAND_NOT_SUPPORTED),
            )
        if atyp == SOCKS_ATYP_IPV4:
            end = 4 + 4
            if len(buf) < end + 2:
                return None
            host = str(ipaddress.IPv4Address(bytes(buf[4:end])))
        elif atyp == SOCKS_ATYP_IPV6:
            end = 4 + 16
            if len(buf) < end + 2:
                return None
            host = str(ipaddress.IPv6Address(bytes(buf[4:end])))
        elif atyp == SOCKS_ATYP_DOMAIN:
            end = 5 + buf[4]
            if len(buf) < end + 2:
                return None
            try:
                host = bytes(buf[5:end]).decode("ascii")
            except UnicodeDecodeError as exc:
                raise ProxyProtocolError(
                    "SOCKS5 domain name is not ASCII", socks5_reply(SOCKS_REPLY_GENERAL_FAILURE)
                ) from exc
        else:
            raise ProxyProtocolError(
                f"SOCKS5 address type {atyp} not supported",
                socks5_reply(SOCKS_REPLY_ADDRESS_TYPE_NOT_SUPPORTED),
            )
        (port,) = struct.unpack("!H", bytes(buf[end : end + 2]))
        early = bytes(buf[end + 2 :])
        buf.clear()
        return ProxyRequest(kind=ProxyKind.SOCKS5, host=host, port=port, early_data=early)

    # HTTP CONNECT and absolute-form forwarding.
    def _feed_http(self) -> ProxyRequest | None:
        buf = self._buffer
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            if len(buf) > MAX_HTTP_HEAD:
                raise _http_error(b"431 Request Header Fields Too Large", "request head over 64 KiB")
            if b"\r\n" in buf or len(buf) >= 8:
                self._check_request_line_prefix(bytes(buf))
            return None
        head = bytes(buf[:head_end])
        rest = bytes(buf[head_end + 4 :])
        buf.clear()
        request_line, _, header_block = head.partition(b"\r\n")
        parts = request_line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _http_error(b"400 Bad Request", f"malformed request line {request_line[:80]!r}")
        method, target, version = parts
        if method == b"CONNECT":
            try:
                host, port = split_host_port(target.decode("ascii"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise _http_error(b"400 Bad Request", f"CONNECT target must be host:port: {exc}") from exc
            return ProxyRequest(kind=ProxyKind.HTTP_CONNECT, host=host, port=port, early_data=rest)
        lowered = target.lower()
        if not lowered.startswith(b"http://"):
            if lowered.startswith(b"https://"):
                raise _http_error(b"400 Bad Request", "https:// targets need CONNECT (set https_proxy)")
            raise _http_error(
                b"400 Bad Request", "this is a proxy: send absolute-form requests (http://host/path) or CONNECT"
            )
        remainder = target[len(b"http://") :]
        slash = remainder.find(b"/")
        authority, path = (remainder, b"/") if slash < 0 else (remainder[:slash], remainder[slash:])
        try:
            host, port = split_host_port(authority.decode("ascii"), default_port=80)
        except (UnicodeDecodeError, ValueError) as exc:
            raise _http_error(b"400 Bad Request", f"bad authority in request target: {exc}") from exc
        lines = [b" ".join((method, path, version)), *_end_to_end_headers(header_block)]
        early = b"\r\n".join(lines) + b"\r\n\r\n" + rest
        return ProxyRequest(kind=ProxyKind.HTTP_FORWARD, host=host, port=port, early_data=early)

    @staticmethod
    def _check_request_line_prefix(data: bytes) -> None:
        """Fail fast on bytes that can never become an HTTP request (e.g. TLS sent to the proxy)."""
        first = data.split(b"\r\n", 1)[0]
        method = first.split(b" ", 1)[0]
        if not method or not method.isalpha() or not method.isupper():
            raise _http_error(b"400 Bad Request", "not SOCKS5 and not an HTTP request")


def _end_to_end_headers(header_block: bytes) -> list[bytes]:
    """Header lines minus the proxy's hop-by-hop ones, which the origin must not see (RFC 9110 §7.6.1)."""
    return [
        line
        for line in header_block.split(b"\r\n")
        if line and line.split(b":", 1)[0].strip().lower() not in (b"proxy-connection", b"proxy-authorization")
    ]
