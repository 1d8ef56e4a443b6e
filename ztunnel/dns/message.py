"""A minimal, strict DNS wire codec (RFC 1035) for the proxy's needs.

Only what a stub resolver sends is parsed — one question, optional EDNS OPT record in the additional
section — and only A/AAAA answers are built. Anything else is answered FORMERR or forwarded as raw
bytes, so a malformed packet costs one error reply, never the server.
"""

from __future__ import annotations

import enum
import ipaddress
import struct

import attrs

from meshcore.errors import MeshError

HEADER = struct.Struct("!HHHHHH")
MAX_NAME = 255
MAX_LABEL = 63


class RRType(enum.IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    MX = 15
    TXT = 16
    AAAA = 28
    SRV = 33
    OPT = 41
    ANY = 255


class RCode(enum.IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


CLASS_IN = 1
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
OPCODE_MASK = 0x7800


class DnsFormatError(MeshError):
    """The packet is not a DNS query we can parse; answered FORMERR when an id is known."""

    hint = "the DNS proxy accepts standard queries with one question"


@attrs.frozen
class Question:
    name: str
    qtype: int
    qclass: int = CLASS_IN


@attrs.frozen
class Query:
    id: int
    flags: int
    question: Question

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split(".") if name.strip(".") else []:
        raw = label.encode("ascii")
        if not raw or len(raw) > MAX_LABEL:
            raise DnsFormatError(f"bad label {label!r} in {name!r}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise DnsFormatError(f"name too long: {name!r}")
    return bytes(out)


def decode_name(packet: bytes, offset: int) -> tuple[str, int]:
    """Decode a possibly compressed name; returns (name, offset after it in the original position)."""
    labels: list[str] = []
    jumps = 0
    end: int | None = None
    total = 0
    while True:
        if offset >= len(packet):
            raise DnsFormatError("name runs past the end of the packet")
        length = packet[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(packet):
                raise DnsFormatError("truncated compression pointer")
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > 16:
                raise DnsFormatError("compression pointer loop")
            offset = ((length & 0x3F) << 8) | packet[offset + 1]
            continue
        if length & 0xC0:
            raise DnsFormatError(f"unsupported label type {length:#x}")
        offset += 1
        if length == 0:
            break
        label = packet[offset : offset + length]
        if len(label) != length:
            raise DnsFormatError("label runs past the end of the packet")
        total += length + 1
        if total > MAX_NAME:
            raise DnsFormatError("name longer than 255 octets")
        try:
            labels.append(label.decode("ascii"))
        except UnicodeDecodeError as exc:
            raise DnsFormatError("non-ASCII label") from exc
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def peek_id(packet: bytes) -> int | None:
    return int.from_bytes(packet[:2], "big") if len(packet) >= 2 else None


def parse_query(packet: bytes) -> Query:
    if len(packet) < HEADER.size:
        raise DnsFormatError(f"packet of {len(packet)} bytes is shorter than a DNS header")
    ident, flags, qdcount, ancount, nscount, _arcount = HEADER.unpack_from(packet)
    if flags & FLAG_QR:
        raise DnsFormatError("packet is a response, not a query")
    if qdcount != 1:
        raise DnsFormatError(f"expected exactly one question, got {qdcount}")
    if ancount or nscount:
        raise DnsFormatError("a query must not carry answers or authority records")
    name, offset = decode_name(packet, HEADER.size)
    if offset + 4 > len(packet):
        raise DnsFormatError("question runs past the end of the packet")
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    return Query(ident, flags, Question(name.lower(), qtype, qclass))


def build_response(
    query: Query,
    rcode: RCode,
    addresses: list[str] | None = None,
    *,
    ttl: int = 30,
    authoritative: bool = True,
) -> bytes:
    """A response echoing the question, with A/AAAA answers for the addresses of the asked type."""
    flags = FLAG_QR | (query.flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | int(rcode)
    if authoritative:
        flags |= FLAG_AA
    answers = bytearray()
    count = 0
    for text in addresses or []:
        ip = ipaddress.ip_address(text)
        rtype = RRType.A if ip.version == 4 else RRType.AAAA
        if query.question.qtype not in (rtype, RRType.ANY):
            continue
        answers += struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(ip.packed)) + ip.packed
        count += 1
    question = encode_name(query.question.name) + struct.pack("!HH", query.question.qtype, query.question.qclass)
    return HEADER.pack(query.id, flags, 1, count, 0, 0) + question + bytes(answers)


def build_error(ident: int, rcode: RCode) -> bytes:
    """An answer to a packet whose question could not be read."""
    return HEADER.pack(ident, FLAG_QR | FLAG_RA | int(rcode), 0, 0, 0, 0)


def build_query(ident: int, name: str, qtype: int, *, recursion_desired: bool = True) -> bytes:
    """A standard query, as a stub resolver sends it (used by tests and health checks)."""
    flags = FLAG_RD if recursion_desired else 0
    return HEADER.pack(ident, flags, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)


@attrs.frozen
class Response:
    id: int
    rcode: RCode
    authoritative: bool
    truncated: bool
    question: Question | None
    addresses: list[str]


def parse_response(packet: bytes) -> Response:
    """Read a response's header, question and A/AAAA answers (tests and the forwarder's checks)."""
    if len(packet) < HEADER.size:
        raise DnsFormatError("short response")
    ident, flags, qdcount, ancount, _ns, _ar = HEADER.unpack_from(packet)
    offset = HEADER.size
    question = None
    for _ in range(qdcount):
        name, offset = decode_name(packet, offset)
        qtype, qclass = struct.unpack_from("!HH", packet, offset)
        offset += 4
        question = Question(name, qtype, qclass)
    addresses: list[str] = []
    for _ in range(ancount):
        _name, offset = decode_name(packet, offset)
        rtype, _cls, _ttl, length = struct.unpack_from("!HHIH", packet, offset)
        offset += 10
        rdata = packet[offset : offset + length]
        offset += length
        if rtype == RRType.A and length == 4:
            addresses.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == RRType.AAAA and length == 16:
            addresses.append(str(ipaddress.IPv6Address(rdata)))
    return Response(
        ident, RCode(flags & 0xF), bool(flags & FLAG_AA), bool(flags & FLAG_TC), question, addresses
    )
