"""CA authentication on Kubernetes: a ztunnel's projected ServiceAccount token, checked by the API server.

Istio's rule, kept here: the token must be valid *for the audience* ``istio-ca`` (a token minted for some
other audience is not a credential for the CA even if it is genuine) and bound to a pod (the pod name and
uid the API server reports in ``user.extra``). Two kinds of caller are accepted:

* the ztunnel ServiceAccount (``system:serviceaccount:istio-system:ztunnel``): it acts for the node of its
  pod (``spec.nodeName``), and node authorization in the CSR service limits that node to identities with
  workloads on it, so a stolen token from one node cannot mint identities of another;
* a waypoint pod (labelled ``gateway.networking.k8s.io/gateway-name``, as the waypoint controller creates
  them): it proves its own ServiceAccount and may obtain that identity only (``Caller.workload``).

Any other workload's token is refused — ambient applications never hold certificates; their ztunnel does.

:func:`check_review` and :func:`caller_node` are the decisions (plain data in, answer or refusal out);
:class:`TokenReviewAuthenticator` makes the two API calls around them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from istiod_lite.kube.api import RESOURCES, KubeApi, KubeApiError
from istiod_lite.tokens import AuthenticationFailed, Caller

CA_AUDIENCE = "istio-ca"
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"


class TokenRefused(AuthenticationFailed):
    """The API server or our rules refused the bearer token."""

    hint = (
        "{reason}; ztunnel must present its projected ServiceAccount token (audience istio-ca) from the "
        "ztunnel DaemonSet in deploy/"
    )


@attrs.frozen
class ReviewedToken:
    """Who the API server says the token belongs to."""

    username: str
    pod_name: str
    pod_uid: str


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def _first(extra: Mapping[str, Any], key: str) -> str:
    values = extra.get(key) or []
    return str(values[0]) if values else ""


GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def check_review(status: Mapping[str, Any], *, audience: str, allowed_user: str | None) -> ReviewedToken:
    """The TokenReview ``status`` → the bound pod, or :class:`TokenRefused` saying why not."""
    if not status.get("authenticated"):
        error = status.get("error") or "not authenticated"
        raise TokenRefused(f"token rejected by the API server: {error}", reason="the token is invalid or expired")
    if audience not in (status.get("audiences") or []):
        raise TokenRefused(
            f"token is not valid for audience {audience!r}", reason=f"project the token with audience {audience}"
        )
    user = status.get("user") or {}
    username = str(user.get("username") or "")
    if allowed_user is not None and username != allowed_user:
        raise TokenRefused(
            f"token belongs to {username or 'nobody'}, not {allowed_user}",
            reason="only ztunnel may request workload certificates",
        )
    extra = user.get("extra") or {}
    pod_name, pod_uid = _first(extra, POD_NAME_EXTRA), _first(extra, POD_UID_EXTRA)
    if not pod_name or not pod_uid:
        raise TokenRefused(
            "token is not bound to a pod", reason="use a projected (pod-bound) token, not a long-lived secret token"
        )
    return ReviewedToken(username=username, pod_name=pod_name, pod_uid=pod_uid)


def _service_account(username: str) -> tuple[str, str] | None:
    """``system:serviceaccount:NS:NAME`` → (NS, NAME); None for any other kind of user."""
    parts = username.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] and all(parts[2:]):
        return parts[2], parts[3]
    return None


def caller_node(pod: Mapping[str, Any] | None, reviewed: ReviewedToken) -> str:
    """The node the token's pod runs on; refused if that pod is gone, replaced, or not scheduled."""
    if pod is None:
        raise TokenRefused(f"pod {reviewed.pod_name} no longer exists", reason="the token outlived its pod")
    metadata = pod.get("metadata") or {}
    if metadata.get("uid") != reviewed.pod_uid:
        raise TokenRefused(
            f"pod {reviewed.pod_name} was replaced (uid {metadata.get('uid')}, token for {reviewed.pod_uid})",
            reason="the token belongs to an earlier pod of that name",
        )
    node = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node:
        raise TokenRefused(f"pod {reviewed.pod_name} is not scheduled on a node", reason="wait for scheduling")
    return node


class TokenReviewAuthenticator:
    """:class:`~istiod_lite.tokens.Authenticator` for Kubernetes: TokenReview, then the caller pod's node."""

    def __init__(
        self,
        api: KubeApi,
        *,
        audience: str = CA_AUDIENCE,
        namespace: str = "istio-system",
        service_account: str = "ztunnel",
    ) -> None:
        self._api = api
        self._audience = audience
        self._namespace = namespace
        self._allowed_user = service_account_user(namespace, service_account)

    async def authenticate(self, token: str) -> Caller:
        if not token:
            raise TokenRefused("no bearer token", reason="send 'Authorization: Bearer <token>'")
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [self._audience]},
        }
        try:
            answer = await self._api.create(RESOURCES["TokenReview"], review)
            reviewed = check_review(answer.get("status") or {}, audience=self._audience, allowed_user=None)
            account = _service_account(reviewed.username)
            namespace = account[0] if account is not None else self._namespace
            pod = await self._api.get(RESOURCES["Pod"], reviewed.pod_name, namespace)
        except KubeApiError as exc:
            raise TokenRefused(f"cannot review the token: {exc}", reason="the TokenReview call failed") from exc
        subject = f"{reviewed.username}/{reviewed.pod_name}"
        if reviewed.username == self._allowed_user:
            return Caller(node=caller_node(pod, reviewed), method="kubernetes-token", subject=subject)
        labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
        if account is None or GATEWAY_NAME_LABEL not in labels:
            raise TokenRefused(
                f"token belongs to {reviewed.username or 'nobody'}, not {self._allowed_user}",
                reason="only ztunnel and waypoint pods may request certificates",
            )
        return Caller(node=caller_node(pod, reviewed), method="kubernetes-token", subject=subject,
                      workload=f"{account[0]}/{account[1]}")
