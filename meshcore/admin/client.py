"""A tiny async HTTP/1.1 client on trio + h11, for meshctl, the OTLP exporter and tests.

Only what talking to our own admin ports (and an OTLP collector) needs: plain HTTP, one request at a
time per connection, complete bodies, keep-alive through :class:`HttpConnection`. Socket errors and
timeouts are mapped at this edge to :class:`AdminRequestFailed` / :class:`AdminRequestTimeout`, whose
hints say what to check.
"""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import h11
import trio

from meshcore.admin.messages import ClientResponse
from meshcore.errors import MeshError

_READ_CHUNK = 65536


class AdminRequestFailed(MeshError):
    """The HTTP exchange failed: connection refused, reset, or a malformed response."""

    hint = "is the component running and listening on {host}:{port}? (meshctl status shows its ports)"


class AdminRequestTimeout(AdminRequestFailed):
    """No complete response within the timeout."""

    hint = "{host}:{port} accepted the connection but did not answer within {timeout}s; is it overloaded?"


class HttpConnection:
    """One keep-alive HTTP/1.1 connection. Use as ``async with HttpConnection(host, port) as conn``."""

    def __init__(
        self, host: str, port: int, *, timeout: float = 10.0, max_body_bytes: int = 64 << 20
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._stream: trio.SocketStream | None = None
        self._conn = h11.Connection(h11.CLIENT)

    async def __aenter__(self) -> HttpConnection:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _failed(self, message: str) -> AdminRequestFailed:
        return AdminRequestFailed(message, host=self.host, port=self.port)

    async def connect(self) -> None:
        with trio.move_on_after(self.timeout) as scope:
            try:
                self._stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                raise self._failed(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        if scope.cancelled_caught:
            raise AdminRequestTimeout(
                f"connecting to {self.host}:{self.port} timed out",
                host=self.host,
                port=self.port,
                timeout=self.timeout,
            )

    async def aclose(self) -> None:
        if self._stream is not None:
            await trio.aclose_forcefully(self._stream)
            self._stream = None

    @property
    def reusable(self) -> bool:
        """True when the last exchange left the connection open for another request."""
        conn = self._conn
        done = conn.our_state is h11.DONE and conn.their_state is h11.DONE
        return self._stream is not None and (conn.our_state is h11.IDLE or done)

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> ClientResponse:
        if self._stream is None:
            await self.connect()
        if self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE:
            self._conn.start_next_cycle()
        if self._conn.our_state is not h11.IDLE:
            raise self._failed("connection is not reusable (the previous response asked to close it)")
        data = _encode_body(body, json_body)
        head: dict[str, str] = {"host": f"{self.host}:{self.port}", "user-agent": "meshcore-admin-client"}
        if json_body is not None:
            head["content-type"] = "application/json"
        head.update({k.lower(): v for k, v in (headers or {}).items()})
        head["content-length"] = str(len(data))
        with trio.move_on_after(self.timeout) as scope:
            try:
                return await self._exchange(method, path, head, data)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await self.aclose()
                raise self._failed(f"{method} {path} on {self.host}:{self.port} failed: {exc}") from exc
            except h11.ProtocolError as exc:
                await self.aclose()
                raise self._failed(f"malformed HTTP response from {self.host}:{self.port}: {exc}") from exc
        assert scope.cancelled_caught
        await self.aclose()
        raise AdminRequestTimeout(
            f"{method} {path} on {self.host}:{self.port} timed out",
            host=self.host,
            port=self.port,
            timeout=self.timeout,
        )

    async def _exchange(self, method: str, path: str, head: dict[str, str], data: bytes) -> ClientResponse:
        assert self._stream is not None
        conn = self._conn
        out = conn.send(h11.Request(method=method, target=path, headers=list(head.items()))) or b""
        if data:
            out += conn.send(h11.Data(data=data)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await self._stream.send_all(out)
        response: h11.Response | None = None
        body = bytearray()
        for _ in range(10_000_000):  # bounded: every round consumes an event or a chunk
            event = conn.next_event()
            if event is h11.NEED_DATA:
                chunk = await self._stream.receive_some(_READ_CHUNK)
                conn.receive_data(chunk)
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body_bytes:
                    raise self._failed(f"response body exceeds {self.max_body_bytes} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise self._failed("connection closed before the response was complete")
        if response is None:  # pragma: no cover - EndOfMessage always follows a Response
            raise self._failed("no response")
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            await self.aclose()
            self._conn = h11.Connection(h11.CLIENT)
        return ClientResponse(
            status=response.status_code,
            headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers],
            body=bytes(body),
            reason=response.reason.decode("latin-1"),
        )


def _encode_body(body: bytes | str | None, json_body: Any) -> bytes:
    if json_body is not None:
        return jsonlib.dumps(json_body).encode()
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else body


async def http_request(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    *,
    json_body: Any = None,
) -> ClientResponse:
    """One request on a fresh connection; the connection is closed afterwards."""
    async with HttpConnection(host, port, timeout=timeout) as conn:
        return await conn.request(method, path, body=body, headers=headers, json_body=json_body)
