"""Plain request/response values shared by the admin server and client (no I/O here)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from meshcore.errors import MeshError

Headers = list[tuple[str, str]]


class HttpError(MeshError):
    """Raised by a handler to answer with a specific status (400, 404, 409, …) and message."""

    def __init__(self, status: int, message: str, **context: Any) -> None:
        super().__init__(message, **context)
        self.status = status


class BadRequest(HttpError):
    hint = "{detail}"

    def __init__(self, message: str, detail: str = "check the request against the endpoint's usage") -> None:
        super().__init__(400, message, detail=detail)


def parse_query(query: str) -> dict[str, list[str]]:
    """``a=1&a=2&b`` → ``{"a": ["1", "2"], "b": [""]}`` (blank values kept: ``/logging?debug`` is a flag)."""
    return parse_qs(query, keep_blank_values=True)


def split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    """An origin-form request target → (path, query)."""
    parts = urlsplit(target)
    return parts.path or "/", parse_query(parts.query)


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key == wanted:
            return value
    return None


@attrs.frozen
class Request:
    """One complete request: the head plus the whole (bounded) body."""

    method: str
    target: str
    path: str
    query: Mapping[str, list[str]]
    headers: Headers  # names lower-cased, values decoded as latin-1
    body: bytes = b""
    client: tuple[str, int] | None = None

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def query_one(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query parameter (like most servers), or ``default``."""
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        """The body as JSON, or a 400 naming the parse error."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadRequest(
                f"request body is not valid JSON: {exc}", "send Content-Type: application/json"
            ) from exc


@attrs.frozen
class Response:
    """Status, headers and a complete body. ``content-length`` is added by the server."""

    status: int = 200
    headers: Headers = attrs.field(factory=list)
    body: bytes = b""

    @classmethod
    def json(cls, payload: Any, status: int = 200, headers: Headers | None = None) -> Response:
        body = (json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n").encode()
        return cls(status, [("content-type", "application/json"), *(headers or [])], body)

    @classmethod
    def text(
        cls,
        text: str,
        status: int = 200,
        content_type: str = "text/plain; charset=utf-8",
        headers: Headers | None = None,
    ) -> Response:
        return cls(status, [("content-type", content_type), *(headers or [])], text.encode())

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)


@attrs.frozen
class ClientResponse:
    """What :func:`meshcore.admin.client.http_request` returns."""

    status: int
    headers: Headers
    body: bytes
    reason: str = ""

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)
