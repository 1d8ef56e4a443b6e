"""The TokenReview decisions without a server: which review answers and pods make a caller, and which not."""

from __future__ import annotations

from typing import Any

import pytest

from istiod_lite.kube.tokenreview import ReviewedToken, TokenRefused, caller_node, check_review

ZTUNNEL = "system:serviceaccount:istio-system:ztunnel"
EXTRA = {"authentication.kubernetes.io/pod-name": ["ztunnel-x"], "authentication.kubernetes.io/pod-uid": ["u1"]}
GOOD: dict[str, Any] = {"authenticated": True, "audiences": ["istio-ca"], "user": {"username": ZTUNNEL, "extra": EXTRA}}


def test_a_good_review_names_the_bound_pod() -> None:
    assert check_review(GOOD, audience="istio-ca", allowed_user=ZTUNNEL) == ReviewedToken(ZTUNNEL, "ztunnel-x", "u1")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"authenticated": False, "error": "token expired"}, "token expired"),
        ({**GOOD, "audiences": ["api"]}, "not valid for audience 'istio-ca'"),
        ({**GOOD, "audiences": None}, "not valid for audience"),
        ({**GOOD, "user": {"username": "system:serviceaccount:prod:app", "extra": EXTRA}}, "belongs to system:"),
        ({**GOOD, "user": {"username": ZTUNNEL}}, "not bound to a pod"),
        ({**GOOD, "user": {"username": ZTUNNEL, "extra": {"authentication.kubernetes.io/pod-name": ["z"]}}},
         "not bound to a pod"),
        ({}, "not authenticated"),
    ],
)
def test_reviews_that_do_not_make_a_ztunnel_caller(status: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenRefused, match=message):
        check_review(status, audience="istio-ca", allowed_user=ZTUNNEL)


REVIEWED = ReviewedToken(ZTUNNEL, "ztunnel-x", "u1")


@pytest.mark.parametrize(
    ("pod", "outcome"),
    [
        ({"metadata": {"uid": "u1"}, "spec": {"nodeName": "node-7"}}, "node-7"),
        (None, "no longer exists"),
        ({"metadata": {"uid": "u0"}, "spec": {"nodeName": "node-7"}}, "was replaced"),
        ({"metadata": {"uid": "u1"}, "spec": {}}, "not scheduled"),
    ],
)
def test_the_callers_node_is_its_pods_node(pod: dict[str, Any] | None, outcome: str) -> None:
    if outcome.startswith("node-"):
        assert caller_node(pod, REVIEWED) == outcome
    else:
        with pytest.raises(TokenRefused, match=outcome):
            caller_node(pod, REVIEWED)
