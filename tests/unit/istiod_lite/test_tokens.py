from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from istiod_lite.tokens import (
    TOKEN_FILE,
    AuthenticationFailed,
    Caller,
    NodeTokenAuthenticator,
    NodeTokens,
    bearer_token,
)


def test_tokens_are_per_node_stable_and_persisted(tmp_path: Path) -> None:
    tokens = NodeTokens(tmp_path)
    a, b = tokens.issue("node-a"), tokens.issue("node-b")
    assert a != b and tokens.issue("node-a") == a
    assert len(a) >= 40
    reloaded = NodeTokens(tmp_path)
    assert reloaded.issue("node-a") == a and reloaded.nodes() == ["node-a", "node-b"]
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600


async def test_authenticator_maps_token_to_node(tmp_path: Path) -> None:
    tokens = NodeTokens(tmp_path)
    token = tokens.issue("node-a")
    auth = NodeTokenAuthenticator(tokens)
    assert await auth.authenticate(token) == Caller(node="node-a", method="node-token", subject="node/node-a")


@pytest.mark.parametrize(
    ("token", "message"),
    [("", "no bearer token"), ("not-a-token", "unknown bearer token")],
)
async def test_authenticator_refuses(tmp_path: Path, token: str, message: str) -> None:
    tokens = NodeTokens(tmp_path)
    tokens.issue("node-a")
    with pytest.raises(AuthenticationFailed, match=message):
        await NodeTokenAuthenticator(tokens).authenticate(token)


async def test_revoked_token_is_refused(tmp_path: Path) -> None:
    tokens = NodeTokens(tmp_path)
    token = tokens.issue("node-a")
    tokens.revoke("node-a")
    with pytest.raises(AuthenticationFailed):
        await NodeTokenAuthenticator(NodeTokens(tmp_path)).authenticate(token)


def test_corrupt_token_file_is_named(tmp_path: Path) -> None:
    (tmp_path / TOKEN_FILE).write_text(json.dumps(["not", "a", "map"]))
    with pytest.raises(AuthenticationFailed, match="remove it to reissue"):
        NodeTokens(tmp_path)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer abc")], "abc"),
        ([(b"Authorization", b"bearer  xyz ")], "xyz"),
        ([(b"authorization", b"Basic abc")], ""),
        ([(b"host", b"istiod")], ""),
    ],
)
def test_bearer_token(headers: list[tuple[bytes, bytes]], expected: str) -> None:
    assert bearer_token(headers) == expected
