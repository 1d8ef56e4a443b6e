"""Building blocks for ztunnel integration tests: a loopback block, certificates, config, apps, SOCKS5.

Each test takes its own random ``127.B.0.0/16`` block so its pods' standard ports (15008, 15080) never
clash with another test running at the same time. Certificates come from the mesh CA
(``istiod_lite.ca``) and are laid out as ``--cert-dir`` expects (see ``ztunnel.cert_dir``).
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from istiod_lite.ca import CertificateAuthority
from meshcore.identity.certs import certificates_pem, private_key_pem
from meshcore.identity.spiffe import Identity
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir

MiB = 1024 * 1024


def free_block() -> int:
    """A second octet B such that 127.B.0.1 has nothing bound on the standard ports right now."""
    rng = random.Random()
    for _ in range(50):
        block = rng.randrange(64, 250)
        with socket.socket() as probe:
            try:
                probe.bind((f"127.{block}.1.1", 15080))
            except OSError:
                continue
        return block
    raise RuntimeError("no free 127.B.0.0/16 block found")


def write_cert_dir(directory: Path, identities: Iterable[Identity], state_dir: Path) -> CertificateAuthority:
    ca = CertificateAuthority.load_or_create(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ROOT_FILE).write_bytes(ca.trust_bundle_pem())
    for identity in identities:
        key = ec.generate_private_key(ec.SECP256R1())
        issued = ca.issue_workload(key.public_key(), identity)
        where = identity_dir(directory, identity)
        where.mkdir(parents=True, exist_ok=True)
        (where / CHAIN_FILE).write_bytes(certificates_pem(issued.chain))
        (where / KEY_FILE).write_bytes(private_key_pem(key))
    return ca


@attrs.frozen
class Pod:
    name: str
    namespace: str
    service_account: str
    ip: str
    node: str
    services: dict[str, dict[int, int]] = attrs.field(factory=dict)
    policies: tuple[str, ...] = ()
    protocol: str = "HBONE"

    @property
    def identity(self) -> Identity:
        return Identity("cluster.local", self.namespace, self.service_account)

    def to_yaml(self) -> dict[str, Any]:
        return {
            "uid": f"Kubernetes//Pod/{self.namespace}/{self.name}",
            "name": self.name,
            "namespace": self.namespace,
            "serviceAccount": self.service_account,
            "workloadIps": [self.ip],
            "protocol": self.protocol,
            "node": self.node,
            "workloadName": self.name,
            "canonicalName": self.name,
            "services": self.services,
            "authorizationPolicies": list(self.policies),
        }


def write_local_config(
    path: Path, pods: Iterable[Pod], services: Iterable[dict[str, Any]] = (), policies: Iterable[dict[str, Any]] = ()
) -> None:
    doc = {"workloads": [p.to_yaml() for p in pods], "services": list(services), "policies": list(policies)}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def ztunnel_args(node: str, address: str, config: Path, cert_dir: Path) -> list[str]:
    return [
        "--node", node, "--node-address", address, "--local-config", str(config), "--cert-dir", str(cert_dir),
        "--admin-port", "0", "--metrics-port", "0", "--ready-port", "0",
    ]


# ------------------------------------------------------------------------------------------ apps


async def echo_app(host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Echo every byte back; answer a half-close with one."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


async def http_app(
    host: str, port: int, body: bytes, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer any HTTP/1.1 request head with ``body`` and close."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            with trio.move_on_after(10):
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    head += chunk
            reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            await stream.send_all(reply)

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


def pattern(seed: int) -> bytes:
    return random.Random(seed).randbytes(MiB)


async def send_pattern(stream: trio.abc.HalfCloseableStream, seed: int, size: int) -> str:
    digest = hashlib.sha256()
    block = pattern(seed)
    for _ in range(size // MiB):
        await stream.send_all(block)
        digest.update(block)
    await stream.send_eof()
    return digest.hexdigest()


async def receive_all(stream: trio.abc.Stream) -> tuple[int, str]:
    digest = hashlib.sha256()
    total = 0
    while data := await stream.receive_some(1 << 20):
        digest.update(data)
        total += len(data)
    return total, digest.hexdigest()


async def bulk_app(
    host: str, port: int, size: int, results: trio.MemorySendChannel[tuple[int, str, str]],
    *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Per connection: send ``size`` bytes of pattern 2 while hashing what arrives; record both."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            sent: list[str] = []
            received: list[tuple[int, str]] = []

            async def send() -> None:
                sent.append(await send_pattern(stream, 2, size))

            async def receive() -> None:
                received.append(await receive_all(stream))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(receive)
            await results.send((received[0][0], received[0][1], sent[0]))

    listeners = await trio.open_tcp_listeners(port, host=host)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


# ---------------------------------------------------------------------------------------- SOCKS5


def socks5_request(host: str, port: int) -> bytes:
    try:
        packed = socket.inet_aton(host)
        address = b"\x01" + packed
    except OSError:
        address = b"\x03" + bytes([len(host)]) + host.encode()
    return b"\x05\x01\x00" + address + struct.pack("!H", port)


async def receive_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


async def socks5_connect(proxy: tuple[str, int], host: str, port: int) -> tuple[trio.SocketStream, int]:
    """Open a SOCKS5 CONNECT through ``proxy``; returns the stream and the reply code (0 = success)."""
    stream = await trio.open_tcp_stream(*proxy)
    await stream.send_all(b"\x05\x01\x00")
    assert await receive_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(socks5_request(host, port))
    reply = await receive_exactly(stream, 10)
    assert len(reply) == 10 and reply[0] == 5, reply
    return stream, reply[1]


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
