"""The translated view a waypoint serves: services bound to it, routes, clusters, L7 policies.

:class:`WaypointView` is the per-waypoint configuration the control plane computes (services bound to
this waypoint, their route tables, the clusters with policies and endpoints, L7 policies). It is built
from :mod:`waypoint.model` / :mod:`waypoint.authz` types only, so the process does not care whether the
view arrived as a push or from a file (``--config FILE``, JSON or YAML, re-read when it changes).

INTERIM: until ``istiod_lite.translate`` publishes its ``WaypointView`` JSON, the file shape is the
cattrs unstructuring of the classes below (route actions tagged with ``"_type"``). When the control
plane's shape lands, :func:`view_from_json` is the one place to adapt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import yaml
from cattrs.preconf.json import make_converter
from cattrs.strategies import configure_tagged_union

from meshcore.errors import MeshError
from waypoint.authz import L7Policy
from waypoint.model import (
    ClusterKey,
    ClusterPolicy,
    DirectResponse,
    Endpoint,
    Redirect,
    RouteTable,
    WeightedDestinations,
)

APP_PROTOCOLS = ("http", "http2", "grpc", "tcp")


class WaypointViewError(MeshError):
    """The view file (or pushed view) cannot be used; the last good view stays in force."""

    hint = "check {source}: it must hold a WaypointView (services, route_tables, clusters, l7_policies)"


@attrs.frozen(kw_only=True)
class ServiceBinding:
    """One service port this waypoint serves. ``vips`` are the addresses clients dial (the HBONE
    ``:authority`` is ``VIP:port``); ``app_protocol`` picks the inner protocol (``http`` sniffs h2c)."""

    hostname: str
    port: int
    name: str = ""
    namespace: str = ""
    vips: tuple[str, ...] = ()
    app_protocol: str = "http"

    def __attrs_post_init__(self) -> None:
        if self.app_protocol not in APP_PROTOCOLS:
            raise WaypointViewError(
                f"service {self.hostname}:{self.port} has appProtocol {self.app_protocol!r}; "
                f"expected one of {', '.join(APP_PROTOCOLS)}",
                source="the view",
            )


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """A cluster (service port, maybe a subset) with its DestinationRule policy and current endpoints."""

    key: ClusterKey
    policy: ClusterPolicy = attrs.field(factory=ClusterPolicy)
    endpoints: tuple[Endpoint, ...] = ()


@attrs.frozen(kw_only=True)
class WaypointView:
    services: tuple[ServiceBinding, ...] = ()
    route_tables: tuple[RouteTable, ...] = ()
    clusters: tuple[ClusterConfig, ...] = ()
    l7_policies: tuple[L7Policy, ...] = ()
    version: str = ""

    def service_for(self, ip: str, port: int) -> ServiceBinding | None:
        """The service a client reached by dialling ``ip:port`` (a VIP)."""
        for service in self.services:
            if service.port == port and ip in service.vips:
                return service
        return None

    def service_by_host(self, hostname: str, port: int) -> ServiceBinding | None:
        for service in self.services:
            if service.port == port and service.hostname == hostname:
                return service
        return None


def _converter() -> cattrs.Converter:
    """The JSON-preconfigured converter (frozensets become lists); route actions carry a ``_type`` tag."""
    converter = make_converter(forbid_extra_keys=True)
    configure_tagged_union(WeightedDestinations | Redirect | DirectResponse, converter)
    return converter


_CONVERTER = _converter()


def view_from_json(document: Mapping[str, Any], *, source: str = "the view") -> WaypointView:
    """Structure a decoded JSON/YAML document; any problem is a :class:`WaypointViewError` naming it."""
    try:
        return _CONVERTER.structure(dict(document), WaypointView)
    except MeshError as exc:
        raise WaypointViewError(f"{source}: {exc}", source=source) from exc
    except Exception as exc:  # cattrs raises exception groups naming every bad field
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else exc
        raise WaypointViewError(f"{source}: invalid waypoint view: {detail}", source=source) from exc


def view_to_json(view: WaypointView) -> dict[str, Any]:
    document = _CONVERTER.unstructure(view)
    assert isinstance(document, dict)
    return document


def load_view(path: Path) -> WaypointView:
    """Read ``path`` (``.json``, else YAML) into a view."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise WaypointViewError(f"cannot read {path}: {exc.strerror}", source=str(path)) from exc
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise WaypointViewError(f"{path} is not valid JSON/YAML: {exc}", source=str(path)) from exc
    if not isinstance(document, dict):
        raise WaypointViewError(f"{path} does not hold a mapping", source=str(path))
    return view_from_json(document, source=str(path))
