from __future__ import annotations

import pytest

from meshcore.identity.ca_wire import CsrAnswer, CsrRequest, WireError


def test_request_round_trip() -> None:
    request = CsrRequest(csr_pem="PEM", identity="spiffe://cluster.local/ns/a/sa/b", ttl_seconds=60)
    assert CsrRequest.decode(request.encode()) == request


def test_answer_round_trips() -> None:
    ok = CsrAnswer(cert_chain=("leaf", "root"), roots=1)
    assert CsrAnswer.decode(ok.encode()) == ok
    refused = CsrAnswer(error_code="NodeNotAuthorized", error_message="no workload")
    assert CsrAnswer.decode(refused.encode()) == refused


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[]", "JSON object"),
        ("{", "not JSON"),
        ('{"identity": "x"}', "'csr'"),
        ('{"csr": "PEM"}', "'identity'"),
        ('{"csr": "PEM", "identity": "x", "ttl_seconds": "1h"}', "'ttl_seconds'"),
        ('{"csr": "PEM", "identity": "x", "ttl_seconds": true}', "'ttl_seconds'"),
    ],
)
def test_bad_requests(text: str, says: str) -> None:
    with pytest.raises(WireError, match=says):
        CsrRequest.decode(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"cert_chain": ["leaf"], "roots": 1}',
        '{"cert_chain": "leaf", "roots": 1}',
        '{"cert_chain": ["a", "b"]}',
        '{"error": "x"}',
    ],
)
def test_bad_answers(text: str) -> None:
    with pytest.raises(WireError):
        CsrAnswer.decode(text)
