"""Building blocks every user resource shares: field metadata, durations, percentages, object metadata.

A field's YAML key and its value constraints live in the attrs field metadata (built with
:func:`meta`) so that one declaration drives three consumers that must agree: the converter that
validates YAML, the CRD generator that writes the openAPIV3Schema, and the tests' data generators.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

# Go's time.ParseDuration grammar without signs, which is what Istio and the Gateway API accept.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(h|ms|m|s|us|µs|ns))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(h|ms|m|s|us|µs|ns)")
_NANOS = {"h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "µs": 10**3, "ns": 1}


# What the Kubernetes API server accepts for object names and namespaces; checked here so that a
# name the cluster would refuse is caught before anything is applied locally.
DNS_SUBDOMAIN = r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^(?=.{1,63}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_TEXT = "a valid name (lowercase letters, digits, '-' and '.', starting and ending alphanumeric)"
DNS_LABEL_TEXT = (
    "a valid namespace (up to 63 lowercase letters, digits and '-', starting and ending alphanumeric)"
)


def meta(
    *,
    key: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    min_items: int | None = None,
    pattern: str | None = None,
    pattern_text: str | None = None,
    always: bool = False,
) -> dict[str, Any]:
    """Field metadata: ``key`` overrides the camelCase YAML name; ``always`` emits the field even
    when it holds its default (``apiVersion``, ``kind``); the rest are value constraints, and
    ``pattern_text`` says in words what ``pattern`` accepts, for the error message."""
    out: dict[str, Any] = {"always": True} if always else {}
    for name, value in (
        ("key", key),
        ("minimum", minimum),
        ("maximum", maximum),
        ("min_items", min_items),
        ("pattern", pattern),
        ("pattern_text", pattern_text),
    ):
        if value is not None:
            out[name] = value
    return out


def yaml_key(field: attrs.Attribute[Any]) -> str:
    """The YAML/JSON key of an attrs field: explicit ``key`` metadata, else snake_case → camelCase."""
    explicit = field.metadata.get("key")
    if explicit is not None:
        return str(explicit)
    first, *rest = field.name.rstrip("_").split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


class DurationSyntaxError(ValueError):
    pass


@attrs.frozen(kw_only=True)
class Duration:
    """A non-negative duration such as ``5s``, ``250ms`` or ``1m30s``.

    ``text`` is kept as written so that dumping a loaded resource gives back what the user wrote;
    ``nanoseconds`` is what the mesh computes with.
    """

    nanoseconds: int
    text: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        if not re.fullmatch(DURATION_PATTERN, text):
            raise DurationSyntaxError(text)
        total = 0
        for number, unit in _DURATION_PART.findall(text):
            whole, _, frac = number.partition(".")
            total += int(whole) * _NANOS[unit]
            if frac:
                total += int(frac) * _NANOS[unit] // 10 ** len(frac)
        return cls(nanoseconds=total, text=text)

    @classmethod
    def from_seconds(cls, seconds: float) -> Duration:
        """A duration written the way Istio prints one (``0.25s`` style decimal seconds)."""
        nanos = round(seconds * 10**9)
        whole, frac = divmod(nanos, 10**9)
        text = f"{whole}s" if not frac else f"{whole}.{frac:09d}".rstrip("0") + "s"
        return cls(nanoseconds=nanos, text=text)

    @property
    def seconds(self) -> float:
        return self.nanoseconds / 10**9

    def __str__(self) -> str:
        return self.text


@attrs.frozen(kw_only=True)
class Percent:
    """Istio's ``Percent`` message: ``{value: 12.5}`` means 12.5 % of requests."""

    value: float = attrs.field(default=0.0, metadata=meta(minimum=0, maximum=100))


@attrs.frozen(kw_only=True)
class ObjectMeta:
    """The part of Kubernetes object metadata the mesh reads.

    Server-populated keys (``uid``, ``resourceVersion`` …) are accepted and dropped so that the
    output of ``kubectl get -o yaml`` loads; a misspelt key we *do* read is still an error.
    """

    IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "ownerReferences",
            "finalizers",
            "selfLink",
            "generateName",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        }
    )

    name: str = attrs.field(metadata=meta(pattern=DNS_SUBDOMAIN, pattern_text=DNS_SUBDOMAIN_TEXT))
    namespace: str | None = attrs.field(
        default=None, metadata=meta(pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT)
    )
    labels: Mapping[str, str] = attrs.field(factory=dict)
    annotations: Mapping[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class LabelSelector:
    """``matchLabels`` only: the mesh selects workloads by equality on labels, like Istio."""

    match_labels: Mapping[str, str] = attrs.field(factory=dict)


DEFAULT_NAMESPACE = "default"


def namespace_of(metadata: ObjectMeta) -> str:
    """Where a namespaced resource lives when the YAML leaves it out (``kubectl apply`` semantics)."""
    return metadata.namespace or DEFAULT_NAMESPACE
