"""The DNS proxy over real loopback sockets: UDP, TCP, forwarding and survival of bad packets."""

from __future__ import annotations

import socket
from pathlib import Path

import trio

from ztunnel.dns.message import RCode, RRType, build_query, parse_response
from ztunnel.dns.server import DnsProxy, upstream_from_resolv_conf

SERVICES = {"web.prod.svc.cluster.local": ["240.240.0.7"]}


def lookup(name: str) -> list[str]:
    return SERVICES.get(name, [])


async def udp_ask(addr: tuple[str, int], packet: bytes) -> bytes:
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(addr)
        await sock.send(packet)
        with trio.fail_after(5):
            return await sock.recv(4096)


async def fake_upstream(task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """An upstream resolver on loopback that answers every query with 127.0.0.53."""
    from ztunnel.dns.message import build_response, parse_query

    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        task_status.started(sock.getsockname())
        while True:
            packet, peer = await sock.recvfrom(4096)
            await sock.sendto(build_response(parse_query(packet), RCode.NOERROR, ["127.0.0.53"],
                                             authoritative=False), peer)


async def test_udp_and_tcp_answers_and_bad_packets() -> None:
    async with trio.open_nursery() as nursery:
        upstream = await nursery.start(fake_upstream)
        proxy = DnsProxy(lookup, host="127.0.0.1", port=0, upstream=upstream)
        addr = await nursery.start(proxy.run)

        response = parse_response(await udp_ask(addr, build_query(1, "web.prod.svc.cluster.local", RRType.A)))
        assert (response.id, response.rcode, response.addresses) == (1, RCode.NOERROR, ["240.240.0.7"])

        bad = parse_response(await udp_ask(addr, b"\x12\x34garbage"))
        assert (bad.id, bad.rcode) == (0x1234, RCode.FORMERR)

        forwarded = parse_response(await udp_ask(addr, build_query(3, "example.org", RRType.A)))
        assert (forwarded.id, forwarded.addresses, forwarded.authoritative) == (3, ["127.0.0.53"], False)

        # TCP: two framed queries on one connection, then a still-working UDP path.
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            for ident in (4, 5):
                packet = build_query(ident, "nope.prod.svc.cluster.local", RRType.A)
                await stream.send_all(len(packet).to_bytes(2, "big") + packet)
                data = b""
                with trio.fail_after(5):
                    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                        data += await stream.receive_some(4096)
                answer = parse_response(data[2:])
                assert (answer.id, answer.rcode) == (ident, RCode.NXDOMAIN)
        again = parse_response(await udp_ask(addr, build_query(6, "web.prod.svc.cluster.local", RRType.A)))
        assert again.addresses == ["240.240.0.7"]
        assert proxy.errors == 1
        nursery.cancel_scope.cancel()


async def test_silent_upstream_gives_servfail(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            await silent.bind(("127.0.0.1", 0))
            proxy = DnsProxy(lookup, host="127.0.0.1", port=0, upstream=silent.getsockname())
            await nursery.start(proxy.run)
            reply = await proxy.answer(build_query(9, "example.org", RRType.A))
            assert reply is not None
            assert parse_response(reply).rcode is RCode.SERVFAIL
        nursery.cancel_scope.cancel()


def test_upstream_from_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search x\nnameserver 127.0.0.53\nnameserver 127.0.0.54\n")
    assert upstream_from_resolv_conf(conf) == ("127.0.0.53", 53)
    assert upstream_from_resolv_conf(tmp_path / "missing") is None
