"""Header mutation and path rewriting as Envoy applies them to a forwarded request.

Envoy evaluates a header mutation list as *remove, then set, then add*, so a route that both removes
and sets a header ends with the new value, and ``add`` keeps any value already there. When several
levels mutate (weighted destination and route), the more specific level runs first and the route
level last, so on a conflicting ``set`` the route level wins (Envoy's default order).

Headers here are the proxy's wire model (:data:`waypoint.messages.Headers`, lower-case byte names);
config values are text and are encoded as Latin-1, the only charset HTTP field values may carry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from waypoint.model import HeaderOps, MatchKind, Rewrite, RouteMatch

HeaderList = list[tuple[bytes, bytes]]


def _enc(text: str) -> bytes:
    return text.encode("latin-1")


def apply_header_ops(headers: Iterable[tuple[bytes, bytes]], ops: HeaderOps) -> HeaderList:
    """A new header list with ``ops`` applied: remove, then set (replacing every copy), then add."""
    result = list(headers)
    if ops.empty:
        return result
    doomed = {_enc(name.lower()) for name in ops.remove} | {_enc(name.lower()) for name, _ in ops.set}
    result = [(k, v) for k, v in result if k not in doomed]
    result.extend((_enc(name.lower()), _enc(value)) for name, value in ops.set)
    result.extend((_enc(name.lower()), _enc(value)) for name, value in ops.add)
    return result


def apply_all(headers: Iterable[tuple[bytes, bytes]], levels: Sequence[HeaderOps]) -> HeaderList:
    """Apply several levels in order (most specific first, as Envoy does by default)."""
    result = list(headers)
    for ops in levels:
        result = apply_header_ops(result, ops)
    return result


def split_path(path: str) -> tuple[str, str]:
    """``/a/b?x=1`` → (``/a/b``, ``?x=1``); the query part keeps its ``?`` (empty when there is none)."""
    index = path.find("?")
    if index < 0:
        return path, ""
    return path[:index], path[index:]


def rewrite_path(path: str, rewrite: Rewrite, matched: RouteMatch | None) -> str:
    """Istio ``rewrite.uri``/``uriRegexRewrite`` applied to ``:path``; the query string is kept.

    With a prefix match the matched prefix is replaced (Envoy ``prefix_rewrite``), so ``/v1/api`` matched
    by prefix ``/v1`` and rewritten to ``/v2`` becomes ``/v2/api``. With an exact match, a regex match or
    no URI match at all, the whole path is replaced.
    """
    only_path, query = split_path(path)
    if rewrite.uri_regex is not None:
        pattern, substitution = rewrite.uri_regex
        return re.sub(pattern, substitution, only_path) + query
    if rewrite.uri is None:
        return path
    uri = matched.uri if matched is not None else None
    if uri is not None and uri.kind in (MatchKind.PREFIX, MatchKind.PATH_SEPARATED_PREFIX):
        prefix_len = len(uri.value)
        if uri.kind is MatchKind.PATH_SEPARATED_PREFIX:
            prefix_len = len(uri.value.rstrip("/"))
            rest = only_path[prefix_len:]
            if rewrite.uri.endswith("/") and rest.startswith("/"):
                rest = rest[1:]
            return (rewrite.uri + rest or "/") + query
        return rewrite.uri + path[prefix_len:]
    return rewrite.uri + query


_PERCENT = re.compile(r"%([0-9a-fA-F]{2})")


def normalize_path(path: str) -> str:
    """Istio's default ``BASE`` path normalization (Envoy ``normalize_path``, RFC 3986 section 6), done
    before routing and authorization so ``/api/../admin`` cannot slip past a rule on ``/admin/*``.

    Percent-encodings get upper-case hex, an encoded dot (``%2E``) counts as a dot, and ``.``/``..``
    segments are removed (never above the root). The query is left alone; slashes are not merged
    (Istio's ``MERGE_SLASHES`` is opt-in); a path not starting with ``/`` (``*``) is returned as is.
    """
    only_path, query = split_path(path)
    if not only_path.startswith("/"):
        return path
    only_path = _PERCENT.sub(lambda m: "%" + m.group(1).upper(), only_path)
    segments = only_path.split("/")[1:]
    output: list[str] = []
    for segment in segments:
        plain = segment.replace("%2E", ".")
        if plain == ".":
            continue
        if plain == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    trailing = segments[-1].replace("%2E", ".") in (".", "..")
    normalized = "/" + "/".join(output) + ("/" if trailing and output else "")
    return normalized + query


def shadow_authority(authority: str) -> str:
    """Envoy's mirror host: ``-shadow`` appended to the host, before any port."""
    host, sep, port = _split_host_port(authority)
    return f"{host}-shadow{sep}{port}"


def _split_host_port(authority: str) -> tuple[str, str, str]:
    if authority.startswith("["):  # [v6]:port
        end = authority.find("]")
        if end >= 0 and authority[end + 1 : end + 2] == ":":
            return authority[: end + 1], ":", authority[end + 2 :]
        return authority, "", ""
    host, sep, port = authority.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host, sep, port
    return authority, "", ""


def split_authority(authority: str) -> tuple[str, int | None]:
    """``host:port`` → (host, port); no or non-numeric port → (authority, None)."""
    host, sep, port = _split_host_port(authority)
    return (host, int(port)) if sep else (host, None)
