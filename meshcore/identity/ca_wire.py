"""The ``/v1/ca`` messages, shared by istiod_lite's CSR service and the proxies' CA client.

One JSON text message per request and per answer over the control-plane WebSocket:

* request: ``{"csr": "<PEM>", "ttl_seconds": 86400, "identity": "spiffe://td/ns/x/sa/y"}``
* answer:  ``{"cert_chain": ["<leaf PEM>", "<intermediate PEM>"…, "<root PEM>"…], "roots": N}`` — Istio's
  order (leaf, intermediates, trust bundle); ``roots`` says how many trailing entries are trust roots,
  because with several roots (a rotation) the split cannot be guessed from the position alone;
* refusal: ``{"error": {"code": "NodeNotAuthorized", "message": "identity … has no workload on node …"}}``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

PATH = "/v1/ca"


class WireError(ValueError):
    """A message that does not have the shape above."""


@attrs.frozen
class CsrRequest:
    csr_pem: str
    identity: str
    ttl_seconds: int | None = None

    def encode(self) -> str:
        return json.dumps({"csr": self.csr_pem, "ttl_seconds": self.ttl_seconds, "identity": self.identity})

    @classmethod
    def decode(cls, text: str | bytes) -> CsrRequest:
        data = _object(text)
        csr, identity, ttl = data.get("csr"), data.get("identity"), data.get("ttl_seconds")
        if not isinstance(csr, str) or not csr:
            raise WireError("'csr' must be a PEM string")
        if not isinstance(identity, str) or not identity:
            raise WireError("'identity' must be a SPIFFE ID string")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
            raise WireError("'ttl_seconds' must be an integer")
        return cls(csr_pem=csr, identity=identity, ttl_seconds=ttl)


@attrs.frozen
class CsrAnswer:
    """Either a chain (``cert_chain`` + ``roots``) or a refusal (``error_code`` + ``error_message``)."""

    cert_chain: tuple[str, ...] = ()
    roots: int = 0
    error_code: str = ""
    error_message: str = ""

    def encode(self) -> str:
        if self.error_code:
            return json.dumps({"error": {"code": self.error_code, "message": self.error_message}})
        return json.dumps({"cert_chain": list(self.cert_chain), "roots": self.roots})

    @classmethod
    def decode(cls, text: str | bytes) -> CsrAnswer:
        data = _object(text)
        if "error" in data:
            err = data["error"]
            if not isinstance(err, dict):
                raise WireError("'error' must be an object")
            return cls(error_code=str(err.get("code", "Unknown")), error_message=str(err.get("message", "")))
        chain, roots = data.get("cert_chain"), data.get("roots")
        if not isinstance(chain, list) or not all(isinstance(c, str) for c in chain):
            raise WireError("'cert_chain' must be a list of PEM strings")
        if isinstance(roots, bool) or not isinstance(roots, int) or not 1 <= roots < len(chain):
            raise WireError("'roots' must count the trailing trust roots, leaving at least the leaf")
        return cls(cert_chain=tuple(chain), roots=roots)


def _object(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WireError("message must be a JSON object")
    return data
