"""One proxied request, start to finish: the waypoint's HTTP filter chain as a trio shell over the cores.

Order (Envoy's filter chain as Istio configures a waypoint): path normalization → L7 authorization
(403 ``RBAC: access denied``) → routing (404 ``NR``, redirects, direct responses) → fault injection
(delay, abort ``FI``) → cluster (503 ``UH`` without a usable endpoint, ``UO`` on breaker overflow) →
upstream attempts with retries, per-try and route timeouts (504 ``UT``) → response header operations →
mirrors (fire and forget) → telemetry. Every attempt is reported to the outlier detector and to the
retry state; every breaker unit taken is released.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Protocol

import attrs
import structlog
import trio

from meshcore.telemetry.istio import ServiceInfo
from meshcore.telemetry.tracecontext import TRACE_HEADERS, extract, inject, new_request_id
from meshcore.telemetry.tracing import SpanKind, StatusCode
from waypoint import authz, fault
from waypoint.circuit_breaker import CircuitBreaker, Resource
from waypoint.clusters import ClusterRuntime, Clusters
from waypoint.headers import apply_all, normalize_path
from waypoint.http1 import REQUEST_BUFFER_LIMIT
from waypoint.lb import NoHealthyUpstream
from waypoint.messages import Body, BodyNotReplayable, Headers, Request, Response, local_response
from waypoint.model import Endpoint, UpstreamFailure
from waypoint.retry import AttemptResult, RetryState, Verdict, failure_reply
from waypoint.router import Forward, LocalReply, MirrorDecision, RequestInfo, find_table, route
from waypoint.telemetry import RequestRecord, RequestTelemetry
from waypoint.upstream import AttemptFailed
from waypoint.view import ServiceBinding, WaypointView

log = structlog.get_logger("waypoint.forwarder")


class UpstreamSender(Protocol):
    """What the forwarder needs from :class:`waypoint.upstream.Upstream`."""

    async def send(
        self, endpoint: Endpoint, request: Request, *, traceparent: str | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> Response: ...


@attrs.frozen(kw_only=True)
class Downstream:
    """Facts about the tunnel a request came in on (from the HBONE CONNECT)."""

    service: ServiceBinding
    source_identity: str | None = None
    source_ip: str = ""
    protocol: str = "HTTP/1.1"


class Forwarder:
    def __init__(
        self,
        *,
        view: Callable[[], WaypointView],
        clusters: Clusters,
        upstream: UpstreamSender,
        telemetry: RequestTelemetry,
        mirrors: trio.Nursery | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._view = view
        self._clusters = clusters
        self._upstream = upstream
        self._telemetry = telemetry
        self._mirrors = mirrors
        self._rng = rng or random.Random()

    async def handle(self, request: Request, downstream: Downstream) -> Response:
        """Serve one request; always returns a response (local replies carry Envoy's flags)."""
        record = self._start_record(request, downstream)
        request.path = normalize_path(request.path.decode("latin-1")).encode("latin-1")
        view = self._view()
        response = await self._filter_chain(request, downstream, view, record)
        if response.response_flags != "-":
            record.flags[:0] = [f for f in response.response_flags.split(",") if f not in record.flags]
        return self._telemetry.finish_when_sent(record, response, request.body)

    def _start_record(self, request: Request, downstream: Downstream) -> RequestRecord:
        service = downstream.service
        request_id = (request.header(b"x-request-id") or b"").decode("latin-1") or new_request_id()
        if request.header(b"x-request-id") is None:
            request.headers.append((b"x-request-id", request_id.encode()))
        parent = extract(request.headers)
        span = self._telemetry.tracer.start_span(
            f"{service.hostname}:{service.port}{request.path.decode('latin-1').split('?')[0]}",
            SpanKind.SERVER,
            parent=parent,
            attributes={"http.request.method": request.method.decode("latin-1"), "request_id": request_id},
        )
        return RequestRecord(
            method=request.method.decode("latin-1"),
            path=request.path.decode("latin-1"),
            authority=request.authority.decode("latin-1"),
            protocol=downstream.protocol,
            started=trio.current_time(),
            request_id=request_id,
            span=span,
            service=ServiceInfo(hostname=service.hostname, name=service.name or None,
                                namespace=service.namespace or None),
            source_identity=downstream.source_identity,
        )

    async def _filter_chain(
        self, request: Request, downstream: Downstream, view: WaypointView, record: RequestRecord
    ) -> Response:
        service = downstream.service
        attributes = authz.RequestAttributes.from_message(
            request, service=service.hostname, port=service.port, source_ip=downstream.source_ip,
            source_principal=downstream.source_identity,
        )
        verdict = authz.evaluate(attributes, view.l7_policies)
        if not verdict.allowed:
            record.error = verdict.details
            return local_response(authz.DENIED_STATUS, authz.DENIED_BODY)
        namespace = _namespace_of(downstream.source_identity)
        info = RequestInfo.from_message(request, port=service.port, source_namespace=namespace)
        decision = route(find_table(view.route_tables, service.hostname, service.port), info, self._rng)
        if isinstance(decision, LocalReply):
            record.route = decision.route_name
            extra: Headers = [(k.encode(), v.encode()) for k, v in decision.headers if k != "content-type"]
            return local_response(decision.status, decision.body, flags=decision.flags, extra=extra)
        record.route = decision.route_name
        record.cluster = decision.cluster.name
        injected = fault.decide(decision.fault, self._rng)
        if injected.delay is not None:
            record.flags.append("DI")
            await trio.sleep(injected.delay)
        if injected.abort_status is not None:
            record.flags.append("FI")
            return local_response(injected.abort_status, fault.ABORT_BODY)
        if injected.abort_grpc_status is not None:
            record.flags.append("FI")
            reply = local_response(200, "", extra=[(b"grpc-status", str(injected.abort_grpc_status).encode())])
            reply.headers = [(k, v) for k, v in reply.headers if k != b"content-type"]
            reply.headers.insert(0, (b"content-type", b"application/grpc"))
            return reply
        cluster = self._clusters.get(decision.cluster)
        if cluster is None or not cluster.endpoints:
            return local_response(503, "no healthy upstream", flags="UH")
        response = await self._forward(request, info, decision, cluster, downstream, record)
        if decision.response_header_ops:
            response.headers = apply_all(response.headers, decision.response_header_ops)
        for mirror in decision.mirrors:
            await self._start_mirror(mirror, request, info, decision, downstream)
        return response

    def _upstream_request(self, request: Request, decision: Forward) -> Request:
        headers = [(k, v) for k, v in decision.headers if k.decode("latin-1") not in TRACE_HEADERS]
        return Request(
            method=decision.method.encode("latin-1"),
            path=decision.path.encode("latin-1"),
            authority=decision.authority.encode("latin-1"),
            headers=headers,
            scheme=request.scheme,
            protocol=request.protocol,
            body=request.body,
        )

    async def _forward(
        self,
        request: Request,
        info: RequestInfo,
        decision: Forward,
        cluster: ClusterRuntime,
        downstream: Downstream,
        record: RequestRecord,
    ) -> Response:
        retry = RetryState(decision.retry, breaker=cluster.breaker)
        deadline = math.inf if decision.timeout is None else trio.current_time() + decision.timeout
        outcome: Response | None = None
        try:
            with trio.move_on_at(deadline) as route_scope:
                outcome = await self._attempts(request, info, decision, cluster, downstream, record, retry)
        finally:
            retry.finish()
        if route_scope.cancelled_caught or outcome is None:
            record.flags.append("UT")
            status, text = failure_reply(UpstreamFailure.TIMEOUT)
            return local_response(status, text)
        return outcome

    async def _attempts(
        self,
        request: Request,
        info: RequestInfo,
        decision: Forward,
        cluster: ClusterRuntime,
        downstream: Downstream,
        record: RequestRecord,
        retry: RetryState,
    ) -> Response:
        upstream_request = self._upstream_request(request, decision)
        base_headers = list(upstream_request.headers)
        while True:
            try:
                endpoint = cluster.choose(info, downstream.source_ip, self._rng, avoid=retry.tried)
            except NoHealthyUpstream:
                record.flags.append("UH")
                return local_response(503, "no healthy upstream")
            overflow = cluster.breaker.try_acquire(Resource.REQUESTS)
            if overflow is not None:
                record.flags.append(overflow.flag)
                return local_response(503, overflow.message)
            record.endpoint = endpoint
            record.attempts = retry.attempt
            span = self._telemetry.attempt_span(record, endpoint, retry.attempt)
            upstream_request.headers = [
                *base_headers, retry.attempt_header(),
                *((k.encode(), v.encode()) for k, v in inject(span.context())),
            ]
            response, result = await self._one_attempt(cluster, endpoint, upstream_request, retry, decision)
            self._telemetry.tracer.finish(
                span, status=StatusCode.ERROR if result.failure is not None or (result.status or 0) >= 500
                else StatusCode.OK,
            )
            verdict = retry.decide(
                result, self._rng, body_replayable=request.body.replayable, endpoint=endpoint.key
            )
            if verdict.verdict is Verdict.RETRY:
                await trio.sleep(verdict.backoff)
                continue
            record.flags.extend(verdict.flags)
            if response is not None:
                return response
            assert result.failure is not None
            record.flags.append(result.failure.flag)
            status, text = failure_reply(result.failure)
            return local_response(status, text)

    async def _one_attempt(
        self, cluster: ClusterRuntime, endpoint: Endpoint, upstream_request: Request, retry: RetryState,
        decision: Forward,
    ) -> tuple[Response | None, AttemptResult]:
        per_try = retry.per_try_timeout(decision.timeout)
        cluster.lb.request_started(endpoint)
        response: Response | None = None
        try:
            with trio.move_on_after(math.inf if per_try is None else per_try) as try_scope:
                try:
                    response = await self._upstream.send(endpoint, upstream_request, breaker=cluster.breaker)
                except AttemptFailed as exc:
                    log.info("upstream_attempt_failed", endpoint=endpoint.key, failure=exc.failure.value,
                             detail=exc.detail)
                    result = AttemptResult.failed(exc.failure)
                except BodyNotReplayable:
                    result = AttemptResult.failed(UpstreamFailure.RESET)
            if try_scope.cancelled_caught:
                response = None
                result = AttemptResult.failed(UpstreamFailure.TIMEOUT)
            elif response is not None:
                result = AttemptResult.response(response.status, _grpc_status(response))
        finally:
            cluster.lb.request_finished(endpoint)
            cluster.breaker.release(Resource.REQUESTS)
        now = trio.current_time()
        if result.failure is not None:
            cluster.report(endpoint, now, failure=result.failure)
        else:
            cluster.report(endpoint, now, status=result.status)
        return response, result

    async def _start_mirror(
        self, mirror: MirrorDecision, request: Request, info: RequestInfo, decision: Forward,
        downstream: Downstream,
    ) -> None:
        """Send a copy to the mirror cluster in the background; its outcome never reaches the caller."""
        cluster = self._clusters.get(mirror.cluster)
        if self._mirrors is None or cluster is None or not request.body.replayable:
            return
        body = b""
        if request.body.complete and request.body.bytes_read:
            body = await request.body.read_all(REQUEST_BUFFER_LIMIT)
        elif not request.body.complete:
            return  # the body was never read (the upstream answered early): nothing safe to copy
        copy = Request(
            method=decision.method.encode("latin-1"),
            path=decision.path.encode("latin-1"),
            authority=mirror.authority.encode("latin-1"),
            headers=[(k, v) for k, v in decision.headers],
            body=Body.from_bytes(body),
        )
        self._mirrors.start_soon(self._mirror, cluster, copy, info, downstream.source_ip)

    async def _mirror(self, cluster: ClusterRuntime, copy: Request, info: RequestInfo, source_ip: str) -> None:
        try:
            endpoint = cluster.choose(info, source_ip, self._rng)
            with trio.move_on_after(30):
                response = await self._upstream.send(endpoint, copy)
                await response.body.read_all(64 * 1024 * 1024)
        except Exception as exc:  # a mirror's failure is only logged
            log.info("mirror_failed", cluster=cluster.key.name, error=f"{type(exc).__name__}: {exc}")


def _namespace_of(identity: str | None) -> str | None:
    if not identity:
        return None
    parts = identity.removeprefix("spiffe://").split("/")
    return parts[2] if len(parts) == 5 and parts[1] == "ns" else None


def _grpc_status(response: Response) -> int | None:
    value = response.header(b"grpc-status")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
