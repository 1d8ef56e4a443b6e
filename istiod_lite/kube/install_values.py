"""What an install may vary: ``meshctl install --set key=value`` parsed into :class:`InstallValues`.

Keys follow Helm-style camelCase (``image``, ``imagePullPolicy``, ``trustDomain``, ``logLevel``,
``resources.<component>.<requests|limits>.<cpu|memory>``). A bad key or value is refused by name before
anything is rendered, so a typo never silently installs the defaults.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from meshcore.errors import MeshError

LOG_LEVELS = ("debug", "info", "warning", "error")
COMPONENTS = ("istiod", "ztunnel", "node-agent")
_QUANTITY = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]|[KMGTPE]i)?")

DEFAULT_RESOURCES: Mapping[str, Mapping[str, Mapping[str, str]]] = {
    "istiod": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    "ztunnel": {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
    "node-agent": {"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"memory": "256Mi"}},
}


class InvalidInstallValue(MeshError):
    hint = (
        "valid keys: image, imagePullPolicy, trustDomain, logLevel, "
        "resources.<istiod|ztunnel|node-agent>.<requests|limits>.<cpu|memory>"
    )


@attrs.frozen(kw_only=True)
class InstallValues:
    image: str = "ambient-mesh:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    trust_domain: str = "cluster.local"
    log_level: str = "info"
    resources: Mapping[str, Mapping[str, Mapping[str, str]]] = DEFAULT_RESOURCES

    def with_overrides(self, pairs: Iterable[tuple[str, str]]) -> InstallValues:
        """``--set key=value`` pairs applied in order; unknown keys and bad values are refused by name."""
        values = self
        for key, value in pairs:
            values = values._with(key, value)
        return values

    def _with(self, key: str, value: str) -> InstallValues:
        simple = {"image": "image", "imagePullPolicy": "image_pull_policy", "trustDomain": "trust_domain",
                  "logLevel": "log_level"}
        if not value:
            raise InvalidInstallValue(f"--set {key}= has an empty value")
        if key in simple:
            if key == "logLevel" and value not in LOG_LEVELS:
                raise InvalidInstallValue(f"--set logLevel={value}: use one of {', '.join(LOG_LEVELS)}")
            if key == "imagePullPolicy" and value not in ("Always", "IfNotPresent", "Never"):
                raise InvalidInstallValue(f"--set imagePullPolicy={value}: use Always, IfNotPresent or Never")
            if key == "trustDomain" and ("/" in value or ":" in value):
                raise InvalidInstallValue(f"--set trustDomain={value}: a trust domain is a DNS-like name")
            changes: dict[str, Any] = {simple[key]: value}
            return attrs.evolve(self, **changes)
        parts = key.split(".")
        if (len(parts) != 4 or parts[0] != "resources" or parts[1] not in COMPONENTS
                or parts[2] not in ("requests", "limits") or parts[3] not in ("cpu", "memory")):
            raise InvalidInstallValue(f"--set {key}: unknown key")
        if not _QUANTITY.fullmatch(value):
            raise InvalidInstallValue(f"--set {key}={value}: not a Kubernetes quantity (e.g. 250m, 1.5, 512Mi)")
        _, component, kind, name = parts
        resources = {c: {k: dict(v) for k, v in r.items()} for c, r in self.resources.items()}
        resources.setdefault(component, {}).setdefault(kind, {})[name] = value
        return attrs.evolve(self, resources=resources)
