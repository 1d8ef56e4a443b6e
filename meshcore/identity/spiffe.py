"""SPIFFE identities as Istio spells them: ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``.

Istio's authorization policies name peers by *principal* — the same ID without the ``spiffe://``
scheme — so both forms are parsed and produced here, in one place, instead of string-sliced at every
call site.
"""

from __future__ import annotations

import re

import attrs

from meshcore.identity.errors import InvalidSpiffeId

SCHEME = "spiffe://"
DEFAULT_TRUST_DOMAIN = "cluster.local"

# DNS-label-ish segments; Kubernetes names are stricter, but a trust domain may contain dots.
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def _check(value: str, pattern: re.Pattern[str], what: str, raw: str) -> None:
    if not pattern.match(value):
        raise InvalidSpiffeId(f"invalid {what} {value!r} in SPIFFE ID {raw!r}", value=raw)


@attrs.frozen(order=True)
class Identity:
    """A workload identity: who a certificate speaks for."""

    trust_domain: str
    namespace: str
    service_account: str

    def __attrs_post_init__(self) -> None:
        raw = f"{SCHEME}{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"
        _check(self.trust_domain, _TRUST_DOMAIN, "trust domain", raw)
        _check(self.namespace, _SEGMENT, "namespace", raw)
        _check(self.service_account, _SEGMENT, "service account", raw)

    @classmethod
    def parse(cls, value: str) -> Identity:
        """Read a SPIFFE URI (``spiffe://td/ns/x/sa/y``) or a principal (``td/ns/x/sa/y``)."""
        body = value[len(SCHEME) :] if value.startswith(SCHEME) else value
        parts = body.split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            raise InvalidSpiffeId(f"not a mesh SPIFFE ID: {value!r}", value=value)
        return cls(trust_domain=parts[0], namespace=parts[2], service_account=parts[4])

    @property
    def uri(self) -> str:
        """The SPIFFE URI as it appears in a certificate's URI SAN."""
        return f"{SCHEME}{self.principal}"

    @property
    def principal(self) -> str:
        """The scheme-less form Istio's AuthorizationPolicy ``principals`` match against."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    def __str__(self) -> str:
        return self.uri
