"""``meshctl authz check``: would this identity be allowed to call that service — and which policy says so?

The answer is computed by the data plane's own decision functions over the configuration istiod_lite
publishes (its ``/debug/config_dump``), so it cannot drift from what the proxies enforce:

* the path is the one a ztunnel picks (:class:`ztunnel.state.ProxyState`): a service with a waypoint
  is reached through it, otherwise each endpoint directly;
* at the waypoint, :func:`waypoint.authz.evaluate` over the waypoint's L7 policies, with the caller's
  identity, method and path — as the waypoint's filter chain calls it;
* at each destination ztunnel, :func:`ztunnel.authz.evaluate` over the policies that apply to that
  workload (:meth:`ProxyState.policies_for`), with the identity the ztunnel sees: the caller's, or the
  waypoint's when the request went through one (Istio ambient semantics).

:func:`explain` is pure (snapshot in, report out); the click command only fetches and prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import click
import yaml

from meshcore.errors import MeshError
from meshctl.commands.common import control_plane_options, run_call
from meshctl.control_plane import ControlPlaneClient
from schemas.discovery import Authorization, Service, Workload, from_json
from waypoint import authz as l7
from waypoint import pushed
from ztunnel import authz as l4
from ztunnel.state import ProxyState

TRUST_DOMAIN = "cluster.local"


class AuthzCheckError(MeshError):
    """The question cannot be answered from the mesh's configuration."""

    hint = "{detail}"


@attrs.frozen(kw_only=True)
class Query:
    source: str  # SPIFFE ID
    service: str  # as the caller would write it: svc, svc.ns or the FQDN
    namespace: str
    port: int
    method: str = "GET"
    path: str = "/"
    source_ip: str | None = None


@attrs.frozen(kw_only=True)
class Step:
    """One enforcement point on the path and its verdict."""

    where: str  # "waypoint" or "ztunnel"
    name: str  # the waypoint ns/name, or the destination workload ns/name
    node: str
    peer_identity: str  # who this enforcement point sees as the caller
    allowed: bool
    policy: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class Report:
    query: Query
    service: str  # the resolved ns/hostname
    waypoint: str | None
    steps: tuple[Step, ...]

    @property
    def allowed(self) -> bool:
        """Allowed when the waypoint (if any) lets it through and at least one endpoint admits it."""
        waypoint_ok = all(step.allowed for step in self.steps if step.where == "waypoint")
        return waypoint_ok and any(step.allowed for step in self.steps if step.where == "ztunnel")

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.query.source,
            "service": self.service,
            "port": self.query.port,
            "method": self.query.method,
            "path": self.query.path,
            "waypoint": self.waypoint,
            "allowed": self.allowed,
            "steps": [step.to_json() for step in self.steps],
        }


def parse_source(text: str) -> str:
    """``spiffe://td/ns/N/sa/S`` as given, or the short ``N/S`` (namespace/serviceaccount) form."""
    if text.startswith("spiffe://"):
        return text
    parts = text.split("/")
    if len(parts) == 2 and all(parts):
        return f"spiffe://{TRUST_DOMAIN}/ns/{parts[0]}/sa/{parts[1]}"
    raise AuthzCheckError(f"--from {text!r} is not an identity",
                          detail="give spiffe://<trust-domain>/ns/<ns>/sa/<sa> or <ns>/<serviceaccount>")


def state_from_snapshot(snapshot: Mapping[str, Mapping[str, Any]]) -> ProxyState:
    """The state a ztunnel holds after receiving ``snapshot`` (istiod_lite's push types)."""
    state = ProxyState()
    state.replace_all(
        workloads=[from_json(Workload, body) for body in snapshot.get("workload", {}).values()],
        services=[from_json(Service, body) for body in snapshot.get("service", {}).values()],
        policies=[from_json(Authorization, body) for body in snapshot.get("authorization", {}).values()],
    )
    return state


def _waypoint_view(
    snapshot: Mapping[str, Mapping[str, Any]], service: Service
) -> tuple[str, pushed.WaypointView] | None:
    gateway = service.waypoint
    if gateway is None:
        return None
    for key, body in snapshot.get(pushed.TYPE_NAME, {}).items():
        view = pushed.from_json(body)
        by_host = gateway.hostname is not None and (gateway.hostname.namespace, gateway.hostname.hostname) == (
            view.namespace, view.hostname)
        by_address = gateway.address is not None and gateway.address.address in view.addresses
        if by_host or by_address:
            return key, view
    named = gateway.hostname.key() if gateway.hostname is not None else str(gateway.address)
    raise AuthzCheckError(f"service {service.namespace}/{service.hostname} names waypoint {named}, "
                          "which istiod_lite has no view for", detail="is its Gateway applied and programmed?")


def _source_ip(state: ProxyState, identity: str, given: str | None) -> str:
    if given is not None:
        return given
    for workload in state.workloads():
        if workload.identity == identity and workload.addresses:
            return workload.addresses[0]
    return "0.0.0.0"


def explain(snapshot: Mapping[str, Mapping[str, Any]], query: Query) -> Report:
    """Every enforcement point between ``query.source`` and the service, with its verdict."""
    state = state_from_snapshot(snapshot)
    service = state.service_by_hostname(query.service, query.namespace)
    if service is None:
        raise AuthzCheckError(f"no service {query.service!r} seen from namespace {query.namespace}",
                              detail="check the name with `meshctl get services -A`")
    port = service.port(query.port)
    if port is None:
        known = ", ".join(str(p.service_port) for p in service.ports) or "none"
        raise AuthzCheckError(f"service {service.namespace}/{service.hostname} has no port {query.port}",
                              detail=f"its ports: {known}")
    source_ip = _source_ip(state, query.source, query.source_ip)
    steps: list[Step] = []
    peer_identity, peer_ip = query.source, source_ip
    found = _waypoint_view(snapshot, service)
    waypoint_key: str | None = None
    if found is not None:
        waypoint_key, view = found
        attributes = l7.RequestAttributes(
            service=service.hostname, host=f"{service.hostname}:{query.port}", port=query.port,
            method=query.method, path=query.path, source_ip=source_ip, source_principal=query.source,
        )
        verdict = l7.evaluate(attributes, pushed.to_process_view(view).l7_policies)  # the policies the waypoint holds
        steps.append(Step(where="waypoint", name=waypoint_key, node="-", peer_identity=query.source,
                          allowed=verdict.allowed, policy=verdict.policy, reason=verdict.reason))
        peer_identity = view.identity
        waypoint_workloads = [w for w in state.workloads() if w.identity == view.identity and w.addresses]
        peer_ip = waypoint_workloads[0].addresses[0] if waypoint_workloads else "0.0.0.0"
    endpoints = state.endpoints(service)
    if not endpoints:
        raise AuthzCheckError(f"service {service.namespace}/{service.hostname} has no endpoints",
                              detail="no workload to decide for; are its pods running?")
    for workload in endpoints:
        target_port = port.target_port or workload.services.get(f"{service.namespace}/{service.hostname}", {}).get(
            query.port, query.port)
        conn = l4.ConnectionInfo(source_ip=peer_ip, destination_ip=workload.addresses[0] if workload.addresses
                                 else "0.0.0.0", destination_port=target_port, source_identity=peer_identity)
        decision = l4.evaluate(conn, state.policies_for(workload))
        steps.append(Step(where="ztunnel", name=f"{workload.namespace}/{workload.name}", node=workload.node or "-",
                          peer_identity=peer_identity, allowed=decision.allowed, policy=decision.policy,
                          reason=str(decision.reason)))
    return Report(query=query, service=f"{service.namespace}/{service.hostname}", waypoint=waypoint_key,
                  steps=tuple(steps))


def render(report: Report) -> str:
    q = report.query
    lines = [
        f"source:      {q.source}",
        f"destination: {report.service}:{q.port}  {q.method} {q.path}"
        + (f"  (through waypoint {report.waypoint})" if report.waypoint else ""),
        "",
    ]
    header = ("AT", "NAME", "NODE", "SEES CALLER AS", "DECISION", "POLICY", "REASON")
    rows = [header] + [
        (s.where, s.name, s.node, s.peer_identity, "ALLOW" if s.allowed else "DENY", s.policy or "-", s.reason)
        for s in report.steps
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += ["", f"result: {'ALLOW' if report.allowed else 'DENY'}"]
    return "\n".join(lines)


@click.group()
def authz() -> None:
    """Explain authorization decisions."""


@authz.command()
@click.option("--from", "source", required=True, metavar="IDENTITY",
              help="Caller: spiffe://td/ns/NS/sa/SA, or NS/SA.")
@click.option("--to", "service", required=True, metavar="SERVICE", help="Service as the caller names it.")
@click.option("-n", "--namespace", "ns", default="default", show_default=True,
              help="Namespace short service names resolve in (the caller's).")
@click.option("--port", type=int, required=True, help="Service port.")
@click.option("--method", default="GET", show_default=True, help="HTTP method (checked at a waypoint).")
@click.option("--path", default="/", show_default=True, help="HTTP path (checked at a waypoint).")
@click.option("--source-ip", help="Caller's IP (default: its workload's address, when it has one).")
@click.option("-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table", show_default=True)
@control_plane_options
def check(source: str, service: str, ns: str, port: int, method: str, path: str, source_ip: str | None,
          output: str, state_dir: Path, istiod_admin: str | None) -> None:
    """Would SOURCE be allowed to call SERVICE:PORT? Each enforcement point's decision and policy."""
    try:
        query = Query(source=parse_source(source), service=service, namespace=ns, port=port,
                      method=method.upper(), path=path, source_ip=source_ip)
    except AuthzCheckError as exc:
        raise click.UsageError(str(exc)) from exc

    async def fetch(client: ControlPlaneClient) -> Any:
        return await client.config_dump()

    dump = run_call(state_dir, istiod_admin, fetch)
    snapshot = dump.get("snapshot") or {}
    try:
        report = explain(snapshot, query)
    except MeshError as exc:
        raise click.ClickException(str(exc)) from exc
    if output == "table":
        click.echo(render(report))
    elif output == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(yaml.safe_dump(report.to_json(), sort_keys=False), nl=False)
