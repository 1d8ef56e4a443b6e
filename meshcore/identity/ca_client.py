"""The proxies' side of ``/v1/ca``: send a CSR to istiod_lite over TLS + WebSocket, get a chain back.

TLS verifies istiod_lite's serving certificate against the mesh root(s) with ordinary hostname
checking (the certificate names ``istiod.istio-system.svc``); the request carries the node's bearer
token. One connection per request: certificates are refreshed at half-life, rarely enough that a
kept-open connection would mostly be idle, and a fresh connection per request needs no reconnect logic.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any, Protocol

import attrs
import trio
import trio_websocket
from cryptography import x509

from meshcore.identity.ca_wire import PATH, CsrAnswer, CsrRequest, WireError
from meshcore.identity.certs import load_pem_certificates
from meshcore.identity.errors import CertificateRequestFailed, CertificateRequestRefused, InvalidCertificate
from meshcore.identity.spiffe import Identity

DEFAULT_SERVER_NAME = "istiod.istio-system.svc"
DEFAULT_TIMEOUT = 10.0


@attrs.frozen
class SignedChain:
    """What the CA returned: leaf + intermediates, and the trust bundle."""

    chain: tuple[x509.Certificate, ...]
    roots: tuple[x509.Certificate, ...]


class CertificateSigner(Protocol):
    """Anything that turns a CSR into a chain; the certificate manager depends only on this."""

    async def sign(self, identity: Identity, csr_pem: str, ttl_seconds: int | None) -> SignedChain: ...


def control_plane_context(roots_pem: bytes) -> ssl.SSLContext:
    """Client context for istiod_lite: trust only the mesh root(s), check the server name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=roots_pem.decode())
    return ctx


class CaClient:
    """:class:`CertificateSigner` talking to istiod_lite's control-plane endpoint."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        token: str,
        roots_pem: bytes,
        server_name: str = DEFAULT_SERVER_NAME,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._address = address
        self._token = token
        self._ctx = control_plane_context(roots_pem)
        self._server_name = server_name
        self._timeout = timeout

    @property
    def _ca(self) -> str:
        return f"istiod_lite at {self._address[0]}:{self._address[1]}"

    async def sign(self, identity: Identity, csr_pem: str, ttl_seconds: int | None) -> SignedChain:
        request = CsrRequest(csr_pem=csr_pem, identity=identity.uri, ttl_seconds=ttl_seconds)
        try:
            with trio.fail_after(self._timeout):
                text = await self._exchange(request.encode())
        except* trio.TooSlowError:
            raise self._failed(identity, f"no answer within {self._timeout}s") from None
        except* trio_websocket.ConnectionRejected as group:
            rejected = group.exceptions[0]
            assert isinstance(rejected, trio_websocket.ConnectionRejected)
            body = (rejected.body or b"").decode(errors="replace")
            raise self._failed(identity, f"HTTP {rejected.status_code}: {body}") from None
        except* (
            OSError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio_websocket.HandshakeError,
            trio_websocket.ConnectionClosed,
        ) as group:
            raise self._failed(identity, _describe(group.exceptions[0])) from None
        return self._parse(identity, text)

    async def _exchange(self, message: str) -> str | bytes:
        tcp = await trio.open_tcp_stream(*self._address)
        tls = trio.SSLStream(tcp, self._ctx, server_hostname=self._server_name, https_compatible=True)
        try:
            await tls.do_handshake()
            async with trio.open_nursery() as nursery:
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    tls,
                    self._server_name,
                    PATH,
                    extra_headers=[(b"authorization", f"Bearer {self._token}".encode())],
                )
                await ws.send_message(message)
                answer = await ws.get_message()
                await ws.aclose()
                nursery.cancel_scope.cancel()
            return answer
        finally:
            await trio.aclose_forcefully(tls)

    def _failed(self, identity: Identity, reason: str) -> CertificateRequestFailed:
        return CertificateRequestFailed(
            f"certificate request for {identity} failed", identity=identity.uri, ca=self._ca, reason=reason
        )

    def _parse(self, identity: Identity, text: str | bytes) -> SignedChain:
        try:
            answer = CsrAnswer.decode(text)
        except WireError as exc:
            raise self._failed(identity, f"unreadable answer: {exc}") from exc
        if answer.error_code:
            raise CertificateRequestRefused(
                f"certificate request for {identity} refused ({answer.error_code})",
                identity=identity.uri,
                ca=self._ca,
                reason=answer.error_message,
                code=answer.error_code,
            )
        try:
            certs = [load_pem_certificates(pem, what="CA answer")[0] for pem in answer.cert_chain]
        except InvalidCertificate as exc:
            raise self._failed(identity, str(exc)) from exc
        split = len(certs) - answer.roots
        return SignedChain(chain=tuple(certs[:split]), roots=tuple(certs[split:]))


def _describe(exc: BaseException) -> str:
    cause: Any = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification of istiod_lite failed: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with istiod_lite failed: {cause.reason}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, OSError):
        return f"cannot connect: {exc.strerror or exc}"
    return repr(exc)


__all__: Sequence[str] = ["CaClient", "CertificateSigner", "SignedChain", "control_plane_context"]
