"""Which resource kinds the mesh understands: (group, kind) → class, accepted versions, rules.

The loader dispatches every YAML document through :func:`lookup`; the CRD generator walks
:data:`KINDS` for the kinds that need a CustomResourceDefinition (everything outside the core
Kubernetes groups).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import attrs

from schemas import core, gateway, networking, security
from schemas.errors import Problem, did_you_mean

Resource: TypeAlias = (
    networking.VirtualService
    | networking.DestinationRule
    | security.AuthorizationPolicy
    | security.PeerAuthentication
    | gateway.Gateway
    | gateway.HTTPRoute
    | core.Namespace
    | core.Service
    | core.ServiceAccount
    | core.Deployment
)


@attrs.frozen(kw_only=True)
class KindInfo:
    group: str  # "" for the core API group
    kind: str
    cls: type[Any]
    versions: tuple[str, ...]  # accepted, newest first; the first is the storage version
    plural: str
    namespaced: bool = True
    check: Callable[[Any], list[Problem]] = lambda _resource: []
    short_names: tuple[str, ...] = ()

    @property
    def api_versions(self) -> tuple[str, ...]:
        return tuple(f"{self.group}/{v}" if self.group else v for v in self.versions)

    @property
    def is_custom(self) -> bool:
        """Served by a CRD rather than by Kubernetes itself."""
        return self.group not in ("", "apps")


def _info(cls: type[Any], plural: str, **kw: Any) -> KindInfo:
    group, versions = _split_versions(cls.API_VERSIONS)
    return KindInfo(group=group, kind=cls.KIND, cls=cls, versions=versions, plural=plural, **kw)


def _split_versions(api_versions: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    groups = {split_api_version(v)[0] for v in api_versions}
    assert len(groups) == 1, api_versions
    return groups.pop(), tuple(split_api_version(v)[1] for v in api_versions)


def split_api_version(api_version: str) -> tuple[str, str]:
    """``networking.istio.io/v1`` → ``("networking.istio.io", "v1")``; ``v1`` → ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


KINDS: dict[tuple[str, str], KindInfo] = {
    (k.group, k.kind): k
    for k in (
        _info(
            networking.VirtualService,
            "virtualservices",
            check=networking.check_virtual_service,
            short_names=("vs",),
        ),
        _info(
            networking.DestinationRule,
            "destinationrules",
            check=networking.check_destination_rule,
            short_names=("dr",),
        ),
        _info(
            security.AuthorizationPolicy,
            "authorizationpolicies",
            check=security.check_authorization_policy,
            short_names=("ap",),
        ),
        _info(
            security.PeerAuthentication,
            "peerauthentications",
            check=security.check_peer_authentication,
            short_names=("pa",),
        ),
        _info(gateway.Gateway, "gateways", check=gateway.check_gateway, short_names=("gtw",)),
        _info(gateway.HTTPRoute, "httproutes", check=gateway.check_http_route),
        _info(core.Namespace, "namespaces", namespaced=False, short_names=("ns",)),
        _info(core.Service, "services", check=core.check_service, short_names=("svc",)),
        _info(core.ServiceAccount, "serviceaccounts", short_names=("sa",)),
        _info(core.Deployment, "deployments", check=core.check_deployment, short_names=("deploy",)),
    )
}


class UnknownKind(LookupError):
    """``apiVersion``/``kind`` name nothing this mesh reads; the message says what would be accepted."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def lookup(api_version: str, kind: str) -> KindInfo:
    """The kind a document declares. The version is checked by the class itself, with the field path."""
    group, _ = split_api_version(api_version)
    info = KINDS.get((group, kind))
    if info is not None:
        return info
    same_kind = [k for k in KINDS.values() if k.kind == kind]
    if same_kind:
        accepted = ", ".join(v for k in same_kind for v in k.api_versions)
        message = f'{kind} is served as {accepted}, got "{api_version}"'
        raise UnknownKind(Problem(path=("apiVersion",), message=message))
    known = sorted({k.kind for k in KINDS.values()})
    hint = did_you_mean(kind, known)
    message = f'unknown kind "{kind}"{hint}; this mesh reads {", ".join(known)}'
    raise UnknownKind(Problem(path=("kind",), message=message))
