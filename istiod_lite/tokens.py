"""Who is calling the control plane: per-node bearer tokens and the :class:`Authenticator` seam.

Locally, istiod_lite issues one random token per node and keeps them in ``<state-dir>/node-tokens.json``
(mode 0600); the runner hands each ztunnel its node's token. On Kubernetes the same seam will take a
projected ServiceAccount token and ask the API server (TokenReview) which pod and node it belongs to —
that implementation only has to return a :class:`Caller`, nothing else changes.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Protocol

import attrs

from meshcore.errors import MeshError

TOKEN_FILE = "node-tokens.json"


class AuthenticationFailed(MeshError):
    """The bearer token is missing, malformed or unknown."""

    hint = "{reason}; check the token file the proxy was started with (meshctl issues one per node)"


@attrs.frozen
class Caller:
    """An authenticated control-plane client: the node it runs on is what node authorization checks.

    ``workload`` is set (``namespace/serviceaccount``) when the caller is a workload proving its own
    ServiceAccount — a waypoint — rather than a node's ztunnel: it may then obtain exactly that identity
    and no other, wherever it runs."""

    node: str
    method: str = "node-token"
    subject: str = ""
    workload: str | None = None


class Authenticator(Protocol):
    """Turns a bearer token into a :class:`Caller`, or raises :class:`AuthenticationFailed`."""

    async def authenticate(self, token: str) -> Caller: ...


WORKLOAD_PREFIX = "workload:"


class NodeTokens:
    """The local token store: issue, look up, revoke; persisted so restarts keep proxies connected."""

    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / TOKEN_FILE
        self._by_node: dict[str, str] = {}
        if self._path.exists():
            try:
                loaded = json.loads(self._path.read_text())
            except (OSError, ValueError) as exc:
                raise AuthenticationFailed(
                    f"cannot read {self._path}", reason=f"the token file is unreadable ({exc})"
                ) from exc
            if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
                raise AuthenticationFailed(
                    f"{self._path} is not a node → token map",
                    reason="the token file was edited or corrupted; remove it to reissue",
                )
            self._by_node = dict(loaded)

    def _save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self._by_node, f, indent=2, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._path)

    def issue(self, node: str) -> str:
        """The node's token, created on first request and stable afterwards."""
        if not node:
            raise ValueError("node name must not be empty")
        if node not in self._by_node:
            self._by_node[node] = secrets.token_urlsafe(32)
            self._save()
        return self._by_node[node]

    def revoke(self, node: str) -> None:
        if self._by_node.pop(node, None) is not None:
            self._save()

    def issue_workload(self, namespace: str, service_account: str) -> str:
        """A token that proves one ServiceAccount (a waypoint's), as a Kubernetes SA token does on a cluster.

        Stored beside the node tokens under ``workload:<ns>/<sa>``; its holder may obtain that identity only."""
        return self.issue(f"{WORKLOAD_PREFIX}{namespace}/{service_account}")

    def nodes(self) -> list[str]:
        return sorted(k for k in self._by_node if not k.startswith(WORKLOAD_PREFIX))

    def lookup(self, token: str) -> str | None:
        """The node a token belongs to; compares in constant time against every stored token."""
        found = None
        for node, known in self._by_node.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = node
        return found


class NodeTokenAuthenticator:
    """:class:`Authenticator` over :class:`NodeTokens`."""

    def __init__(self, tokens: NodeTokens) -> None:
        self._tokens = tokens

    async def authenticate(self, token: str) -> Caller:
        if not token:
            raise AuthenticationFailed("no bearer token", reason="send 'Authorization: Bearer <token>'")
        node = self._tokens.lookup(token)
        if node is None:
            raise AuthenticationFailed(
                "unknown bearer token", reason="the token is not one istiod_lite issued"
            )
        if node.startswith(WORKLOAD_PREFIX):
            workload = node.removeprefix(WORKLOAD_PREFIX)
            return Caller(node="", method="workload-token", subject=f"workload/{workload}", workload=workload)
        return Caller(node=node, method="node-token", subject=f"node/{node}")


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str:
    """The token from an ``Authorization: Bearer …`` header, or ``""`` when there is none."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""
