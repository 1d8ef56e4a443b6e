"""Typed resources back to multi-document YAML.

Keys come out camelCase in schema order (apiVersion, kind, metadata, spec); unset fields and
defaults are left out; durations keep the text they were loaded from. Loading the output gives
equal objects, which the round-trip tests check.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from schemas.converter import unstructure
from schemas.kinds import Resource


class _Dumper(yaml.SafeDumper):
    """Block style lists indented under their key, the way kubectl and Istio's docs write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_data(resource: Resource) -> dict[str, Any]:
    data: dict[str, Any] = unstructure(resource)
    return data


def dump_yaml(resources: Iterable[Resource]) -> str:
    """One ``---``-separated YAML document per resource."""
    return yaml.dump_all(
        [to_data(r) for r in resources],
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )
