"""The HBONE CONNECT contract, sans-IO: validate what a client asked for, build what a client sends.

Plain data in, a decision out — no sockets, no clock, no logging — so every rule of DESIGN §3 is a row
in a table-driven test. The server shell hands :func:`validate_connect` the raw header block of a new
stream and answers a :class:`Rejection` itself; only a valid :class:`ConnectRequest` reaches the
component's handler (which adds authorization, 401, and the app connect, 503).

h2's own inbound header validation is switched off on the HBONE server so that a malformed request is
a *stream* error answered here with 400, instead of an h2 protocol error that would tear down every
other tunnel sharing the connection; that is why this module checks pseudo-header rules too.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Sequence

import attrs

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Accepted request header list size, counted as HTTP/2 does (name + value + 32 per field). ztunnel
# accepts 64 KiB; a CONNECT carries a handful of short headers, so anything near this is abuse.
MAX_HEADER_LIST_SIZE = 64 * 1024


class ConnectStatus(enum.IntEnum):
    """The statuses HBONE speaks (DESIGN §3)."""

    OK = 200
    BAD_REQUEST = 400  # bad method, bad authority, IP not served here, malformed request
    UNAUTHORIZED = 401  # denied by authorization policy
    SERVICE_UNAVAILABLE = 503  # unknown port or the upstream connect failed


# Ports of the proxy itself. 15008 in an authority would tunnel HBONE into HBONE (a client bug or a
# loop): a bad request. The capture ports have no application behind them: an unknown port.
PROXY_PORTS: dict[int, ConnectStatus] = {
    15001: ConnectStatus.SERVICE_UNAVAILABLE,
    15006: ConnectStatus.SERVICE_UNAVAILABLE,
    15008: ConnectStatus.BAD_REQUEST,
}

_KNOWN_PSEUDO = frozenset({b":method", b":authority", b":scheme", b":path", b":protocol"})
# RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)


@attrs.frozen
class Rejection:
    """Answer the stream with ``status`` and do nothing else; ``reason`` is for the log."""

    status: ConnectStatus
    reason: str


@attrs.frozen
class ConnectRequest:
    """A valid HBONE CONNECT: where the tunnel goes and what the client told us about its origin."""

    authority: str
    target_ip: IPAddress
    target_port: int
    forwarded_for: tuple[IPAddress, int | None] | None = None
    forwarded_host: str | None = None
    baggage: str | None = None
    traceparent: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # Filled in by the server shell from the TLS connection, not from headers.
    peer_identity: str = ""
    peer_address: str = ""


@attrs.frozen
class ConnectResponse:
    """What the server answered; ``baggage`` names the destination for telemetry."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    baggage: str | None = None


def header_list_size(headers: Sequence[tuple[bytes, bytes]]) -> int:
    """Size as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2)."""
    return sum(len(name) + len(value) + 32 for name, value in headers)


def parse_authority(authority: str) -> tuple[IPAddress, int]:
    """``ip:port`` or ``[v6]:port`` → (address, port); ValueError naming what is wrong otherwise.

    Names are refused: HBONE addresses a workload or service VIP by IP, never by DNS name.
    """
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0 or authority[close + 1 : close + 2] != ":":
            raise ValueError(f"authority {authority!r} is not [ipv6]:port")
        host, port_text = authority[1:close], authority[close + 2 :]
        ip: IPAddress = ipaddress.IPv6Address(_strict_ip(host, ipaddress.IPv6Address))
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep or not host:
            raise ValueError(f"authority {authority!r} has no port (expected ip:port)")
        if ":" in host:
            raise ValueError(f"authority {authority!r}: an IPv6 address must be bracketed, [ip]:port")
        ip = ipaddress.IPv4Address(_strict_ip(host, ipaddress.IPv4Address))
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError(f"authority {authority!r} has a bad port {port_text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"authority {authority!r} has port {port} outside 1..65535")
    return ip, port


def _strict_ip(host: str, kind: type[IPAddress]) -> str:
    try:
        kind(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (HBONE authorities are ip:port)") from None
    return host


def format_authority(ip: IPAddress | str, port: int) -> str:
    """The authority-form for an address, bracketing IPv6."""
    address = ipaddress.ip_address(ip)
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}"


def parse_forwarded(value: str) -> tuple[tuple[IPAddress, int | None] | None, str | None]:
    """The first element's ``for`` (address, optional port) and ``host`` of an RFC 7239 header.

    Telemetry-only information, so anything unparseable is ignored rather than rejected.
    """
    first = value.split(",", 1)[0]
    client: tuple[IPAddress, int | None] | None = None
    host: str | None = None
    for pair in first.split(";"):
        key, sep, raw = pair.strip().partition("=")
        if not sep:
            continue
        text = raw.strip().strip('"')
        if key.strip().lower() == "for":
            client = _parse_node(text)
        elif key.strip().lower() == "host":
            host = text or None
    return client, host


def _parse_node(text: str) -> tuple[IPAddress, int | None] | None:
    try:
        if text.startswith("["):
            ip6, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
            return ipaddress.IPv6Address(ip6), port
        host, sep, port_text = text.partition(":")
        return ipaddress.IPv4Address(host), int(port_text) if sep else None
    except ValueError:
        return None


def validate_connect(
    headers: Sequence[tuple[bytes, bytes]], *, serves: Callable[[IPAddress], bool]
) -> ConnectRequest | Rejection:
    """Decide what to do with a new HBONE stream's request headers.

    ``serves(ip)`` says whether this server fronts that address (a local workload's IP for a
    ztunnel, a service VIP for a waypoint).
    """
    if header_list_size(headers) > MAX_HEADER_LIST_SIZE:
        return _bad(f"header block of {header_list_size(headers)} bytes exceeds {MAX_HEADER_LIST_SIZE}")
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[str, str]] = []
    for name, value in headers:
        if name.startswith(b":"):
            if regular:
                return _bad(f"pseudo-header {name!r} after regular headers")
            if name not in _KNOWN_PSEUDO:
                return _bad(f"unknown pseudo-header {name!r}")
            if name in pseudo:
                return _bad(f"duplicate pseudo-header {name!r}")
            pseudo[name] = value
            continue
        if name.lower() != name or not name:
            return _bad(f"header name {name!r} is not lower-case")
        if name in _CONNECTION_SPECIFIC:
            return _bad(f"connection-specific header {name!r} is not allowed in HTTP/2")
        try:
            regular.append((name.decode("ascii"), value.decode("utf-8")))
        except UnicodeDecodeError:
            return _bad(f"header {name!r} is not valid text")
    method = pseudo.get(b":method")
    if method != b"CONNECT":
        return _bad(f"method {method!r} is not CONNECT")
    for forbidden in (b":scheme", b":path", b":protocol"):
        if forbidden in pseudo:
            return _bad(f"CONNECT must be authority-form but carries {forbidden.decode()}")
    raw_authority = pseudo.get(b":authority")
    if not raw_authority:
        return _bad("CONNECT has no :authority")
    try:
        authority = raw_authority.decode("ascii")
        ip, port = parse_authority(authority)
    except (UnicodeDecodeError, ValueError) as exc:
        return _bad(str(exc))
    if not serves(ip):
        return _bad(f"{ip} is not an address served here")
    if port in PROXY_PORTS:
        return Rejection(PROXY_PORTS[port], f"port {port} is a proxy port, not an application port")
    fields = dict(regular)
    forwarded_for, forwarded_host = (
        parse_forwarded(fields["forwarded"]) if "forwarded" in fields else (None, None)
    )
    return ConnectRequest(
        authority=authority,
        target_ip=ip,
        target_port=port,
        forwarded_for=forwarded_for,
        forwarded_host=forwarded_host,
        baggage=fields.get("baggage"),
        traceparent=fields.get("traceparent"),
        headers=tuple(regular),
    )


def _bad(reason: str) -> Rejection:
    return Rejection(ConnectStatus.BAD_REQUEST, reason)


def build_connect_headers(
    authority: str,
    *,
    forwarded_for: tuple[IPAddress | str, int] | None = None,
    forwarded_host: str | None = None,
    baggage: str | None = None,
    traceparent: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The client's CONNECT header block; the authority is checked so a bad one never leaves us."""
    parse_authority(authority)
    headers = [(":method", "CONNECT"), (":authority", authority)]
    if forwarded_for is not None:
        value = f'for="{format_authority(*forwarded_for)}"'
        if forwarded_host:
            value += f";host={forwarded_host}"
        headers.append(("forwarded", value))
    if baggage:
        headers.append(("baggage", baggage))
    if traceparent:
        headers.append(("traceparent", traceparent))
    headers.extend(extra)
    return headers


def build_response_headers(status: int, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """The server's answer header block."""
    return [(":status", str(int(status))), *extra]


def parse_response(headers: Sequence[tuple[bytes, bytes]]) -> ConnectResponse:
    """A response header block → :class:`ConnectResponse`; a missing/garbled status reads as 502."""
    status = 502
    rest: list[tuple[str, str]] = []
    for name, value in headers:
        if name == b":status":
            text = value.decode("ascii", "replace")
            status = int(text) if text.isdigit() else 502
        elif not name.startswith(b":"):
            rest.append((name.decode("ascii", "replace"), value.decode("utf-8", "replace")))
    return ConnectResponse(status=status, headers=tuple(rest), baggage=dict(rest).get("baggage"))


STATUS_MEANING: dict[int, str] = {
    200: "tunnel established",
    400: "the peer found the request malformed (method, authority, or an address it does not serve)",
    401: "the destination's authorization policy denied this source identity",
    503: "the destination port is unknown there or its application refused the connection",
}
