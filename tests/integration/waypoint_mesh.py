"""Building blocks for waypoint integration tests: apps, an HBONE client acting as a ztunnel, the view.

client (this process, with a client certificate from the mesh CA, as a ztunnel sends it)
  ══HBONE :authority VIP:port══► ``python -m waypoint`` (127.B.3.1:15008)
  ══HBONE :authority podIP:8080══► ``python -m ztunnel`` for node-b (podIP:15008) ─TCP─► app (this process)

Apps are small keep-alive HTTP/1.1 servers (on :func:`waypoint.http1.serve_http1`) that report their
name and version and misbehave on request: ``/flaky`` fails one request in three with 503, ``/slow…``
answers after 2 s, ``/eject`` fails with 500 on a "bad" app. They count what they receive.
"""

from __future__ import annotations

import collections
import contextlib
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from meshcore.hbone.pool import HbonePool, PoolKey
from meshcore.hbone.server import VerifyPeer
from meshcore.identity.certs import WorkloadCertificate
from meshcore.identity.spiffe import Identity
from meshcore.identity.tls import TlsStream, client_context, verify_peer_server
from tests.support.processes import Component
from waypoint.http1 import Http1ClientConnection, serve_http1
from waypoint.messages import Body, Request, Response
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, identity_dir

WAYPOINT = Identity("cluster.local", "prod", "waypoint")
CLIENT = Identity("cluster.local", "client", "client")
INTRUDER = Identity("cluster.local", "other", "intruder")


@attrs.define
class App:
    """One app instance; ``received`` counts complete requests by first path segment."""

    name: str
    version: str
    bad: bool = False
    received: collections.Counter[str] = attrs.field(factory=collections.Counter)
    flaky_seen: int = 0

    async def handle(self, request: Request) -> Response:
        path = request.path.decode()
        segment = "/" + path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        await request.body.read_all(1 << 20)
        self.received[segment] += 1  # counted once the whole request arrived
        status = 200
        if segment == "/flaky":
            self.flaky_seen += 1
            if self.flaky_seen % 3 == 0:
                status = 503
        elif segment.startswith("/slow"):
            await trio.sleep(2)
        elif segment == "/eject" and self.bad:
            status = 500
        if segment == "/headers":
            payload = json.dumps({k.decode(): v.decode() for k, v in request.headers}).encode()
        else:
            payload = f"{self.name} {self.version} {path}\n".encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(payload)).encode()),
                   (b"x-app", self.name.encode()), (b"x-version", self.version.encode())]
        return Response(status=status, headers=headers, body=Body.from_bytes(payload))

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def connection(stream: trio.SocketStream) -> None:
            # BrokenResourceError: the proxy reset the connection mid-request (it refused what the client sent)
            async with stream:
                with contextlib.suppress(trio.BrokenResourceError):
                    await serve_http1(stream, self.handle)

        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started()
        await trio.serve_listeners(connection, listeners)


def load_identity(cert_dir: Path, identity: Identity) -> WorkloadCertificate:
    where = identity_dir(cert_dir, identity)
    return WorkloadCertificate.from_pem(
        (where / CHAIN_FILE).read_bytes(), (where / KEY_FILE).read_bytes(), (cert_dir / ROOT_FILE).read_bytes()
    )


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def version(self) -> str:
        return self.headers.get("x-version", "")


class MeshClient:
    """Plays the client's ztunnel: HBONE with the client's certificate to the waypoint, HTTP/1.1 inside."""

    def __init__(self, cert: WorkloadCertificate, waypoint_ip: str) -> None:
        self.cert = cert
        self.waypoint_ip = waypoint_ip
        chain, key, roots = cert.chain_pem(), cert.key_pem(), cert.roots_pem()
        self._context: ssl.SSLContext = client_context(chain, key, roots)
        self.pool = HbonePool(self._tls_for)

    def _tls_for(self, key: PoolKey) -> tuple[ssl.SSLContext, VerifyPeer]:
        expected = key.destination_identities

        def verify(stream: TlsStream) -> str:
            return verify_peer_server(stream, expected).uri

        return self._context, verify

    @asynccontextmanager
    async def tunnel(self, authority: str) -> AsyncIterator[trio.abc.HalfCloseableStream]:
        key = PoolKey(self.cert.identity.uri, (WAYPOINT.uri,), self.waypoint_ip, 15008)
        async with self.pool.open(key, authority, forwarded_for=("127.0.0.1", 40000)) as (_, stream):
            yield stream

    @asynccontextmanager
    async def http(self, authority: str) -> AsyncIterator[HttpSession]:
        async with self.tunnel(authority) as stream:
            yield HttpSession(Http1ClientConnection(stream))


class HttpSession:
    """Keep-alive HTTP/1.1 over one tunnel."""

    def __init__(self, connection: Http1ClientConnection) -> None:
        self.connection = connection

    async def request(
        self, path: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Reply:
        pairs = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        if body:
            pairs.append((b"content-length", str(len(body)).encode()))
        request = Request(method=method.encode(), path=path.encode(), authority=b"svc", headers=pairs,
                          body=Body.from_bytes(body))
        response = await self.connection.request(request)
        data = await response.body.read_all(16 << 20)
        return Reply(response.status, {k.decode(): v.decode() for k, v in response.headers}, data)


def access_log(component: Component) -> list[dict[str, Any]]:
    lines = []
    for line in component.log_path.read_text().splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if doc.get("event") == "request complete":
            lines.append(doc)
    return lines


def series(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
