"""The one cattrs converter between YAML-shaped data and the typed user resources.

Structuring *is* validation: every hook raises :class:`~schemas.errors.StructureFailure` carrying
all problems found below it, each with its path, and a class hook gathers its fields' failures
before raising, so one pass over a document reports every shape error in it (unknown fields with a
"did you mean", wrong types, bad enum values, missing required fields, out-of-range numbers).
Rules that relate several fields (weights summing to 100, duplicate subsets …) live next to their
kinds and run on the structured objects.

Class-level knobs, all optional ``ClassVar``s on an attrs class:

* ``IGNORED_KEYS`` — Kubernetes keys accepted and dropped (``uid``, ``resources`` …).
* ``UNSUPPORTED_KEYS`` — key → reason, for real Istio features this mesh does not implement.
* ``ONE_OF`` / ``ONE_OF_REQUIRED`` — YAML keys of which at most (exactly) one may be set.
* ``KIND`` / ``API_VERSIONS`` — the envelope a top-level resource class accepts.
* ``UNSUPPORTED_VALUES`` (on a ``StrEnum``) — value → reason, e.g. AuthorizationPolicy ``AUDIT``.
"""

from __future__ import annotations

import collections.abc
import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from schemas.common import Duration, DurationSyntaxError, yaml_key
from schemas.errors import MapKey, Problem, StructureFailure, describe, did_you_mean

T = TypeVar("T")

_TYPE_NAMES: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _fail(message: str) -> StructureFailure:
    return StructureFailure([Problem(path=(), message=message)])


# ------------------------------------------------------------------------------------ predicates


def is_optional(kind: Any) -> bool:
    return isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)


def strip_optional(kind: Any) -> Any:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return functools.reduce(lambda a, b: a | b, args) if len(args) > 1 else args[0]


def is_int_or_string(kind: Any) -> bool:
    return isinstance(kind, types.UnionType) and set(typing.get_args(kind)) == {int, str}


def is_list(kind: Any) -> bool:
    args = typing.get_args(kind)
    return typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis


def is_map(kind: Any) -> bool:
    return typing.get_origin(kind) in (dict, collections.abc.Mapping)


def is_enum(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, enum.Enum)


def is_record(kind: Any) -> bool:
    return isinstance(kind, type) and attrs.has(kind) and kind is not Duration


def record_fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    """The attrs fields of ``cls`` with string annotations resolved to real types."""
    attrs.resolve_types(cls)
    return typing.cast("tuple[attrs.Attribute[Any], ...]", attrs.fields(cls))


# ------------------------------------------------------------------------------------- scalars


def _scalar(kind: type) -> Callable[[Any, Any], Any]:
    name = _TYPE_NAMES[kind]

    def structure(value: Any, _type: Any) -> Any:
        if kind is float and type(value) is int:
            return float(value)
        if type(value) is not kind:
            raise _fail(f"expected {name}, got {describe(value)}")
        return value

    return structure


def _structure_int_or_string(value: Any, _type: Any) -> int | str:
    if isinstance(value, int | str) and not isinstance(value, bool):
        return value
    raise _fail(f"expected integer or string, got {describe(value)}")


def _structure_duration(value: Any, _type: Any) -> Duration:
    if type(value) is str:
        try:
            return Duration.parse(value)
        except DurationSyntaxError:
            pass
    raise _fail(f'expected a duration like "5s", "250ms" or "1m30s", got {describe(value)}')


def _structure_enum(value: Any, kind: type[enum.Enum]) -> enum.Enum:
    allowed = [str(m.value) for m in kind]
    unsupported: Mapping[str, str] = getattr(kind, "UNSUPPORTED_VALUES", {})
    if type(value) is str and value in unsupported:
        raise _fail(f"{describe(value)} is not supported: {unsupported[value]}")
    if type(value) is str:
        try:
            return kind(value)
        except ValueError:
            pass
    hint = did_you_mean(value, allowed) if type(value) is str else ""
    raise _fail(f"expected one of {', '.join(allowed)}, got {describe(value)}{hint}")


# ---------------------------------------------------------------------------------- containers


def _list_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    (item,) = typing.get_args(kind)[:1]

    def structure(value: Any, _type: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise _fail(f"expected a list, got {describe(value)}")
        out: list[Any] = []
        problems: list[Problem] = []
        for index, element in enumerate(value):
            try:
                out.append(conv.structure(element, item))
            except StructureFailure as failure:
                problems.extend(p.under(index) for p in failure.problems)
        if problems:
            raise StructureFailure(problems)
        return tuple(out)

    return structure


def _map_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    key_type, value_type = typing.get_args(kind)

    def structure(value: Any, _type: Any) -> dict[Any, Any]:
        if not isinstance(value, dict):
            raise _fail(f"expected an object, got {describe(value)}")
        out: dict[Any, Any] = {}
        problems: list[Problem] = []
        for key, element in value.items():
            if key_type is int and type(key) is str and key.isdigit():
                key = int(key)
            if type(key) is not key_type:
                problems.append(
                    Problem(path=(MapKey(str(key)),), message=f"expected {_TYPE_NAMES[key_type]} key")
                )
                continue
            try:
                out[key] = conv.structure(element, value_type)
            except StructureFailure as failure:
                problems.extend(p.under(MapKey(key)) for p in failure.problems)
        if problems:
            raise StructureFailure(problems)
        return out

    return structure


def _optional_hook(kind: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    inner = strip_optional(kind)
    return lambda value, _type: None if value is None else conv.structure(value, inner)


# ------------------------------------------------------------------------------------- records


def constraint_problems(field: attrs.Attribute[Any], value: Any) -> list[str]:
    """Value constraints from the field metadata; the CRD generator emits the same ones."""
    md = field.metadata
    out: list[str] = []
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in md and value < md["minimum"]:
            out.append(f"must be at least {md['minimum']}, got {describe(value)}")
        if "maximum" in md and value > md["maximum"]:
            out.append(f"must be at most {md['maximum']}, got {describe(value)}")
    if "min_items" in md and isinstance(value, tuple | dict) and len(value) < md["min_items"]:
        out.append(f"must have at least {md['min_items']} item(s)")
    if "pattern" in md and isinstance(value, str) and not re.search(md["pattern"], value):
        wanted = md.get("pattern_text") or f"matching {md['pattern']}"
        out.append(f"{describe(value)} is not {wanted}")
    return out


def _record_hook(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    fields = {yaml_key(f): f for f in record_fields(cls)}
    ignored: frozenset[str] = getattr(cls, "IGNORED_KEYS", frozenset())
    unsupported: Mapping[str, str] = getattr(cls, "UNSUPPORTED_KEYS", {})
    one_of: tuple[str, ...] = getattr(cls, "ONE_OF", ())
    one_of_required: bool = getattr(cls, "ONE_OF_REQUIRED", False)

    def structure(value: Any, _type: Any) -> Any:
        if not isinstance(value, dict):
            raise _fail(f"expected an object, got {describe(value)}")
        problems: list[Problem] = []
        kwargs: dict[str, Any] = {}
        for key, element in value.items():
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                if key in ignored:
                    continue
                if key in unsupported:
                    problems.append(Problem(path=(key,), message=f"not supported: {unsupported[key]}"))
                else:
                    hint = did_you_mean(str(key), fields)
                    problems.append(Problem(path=(str(key),), message=f"unknown field{hint}"))
                continue
            if element is None:
                continue  # Kubernetes reads an explicit null as "not set" (required ones: see below)
            try:
                kwargs[field.name] = conv.structure(element, typing.cast(Any, field.type))
            except StructureFailure as failure:
                problems.extend(p.under(key) for p in failure.problems)
                continue
            problems.extend(
                Problem(path=(key,), message=m) for m in constraint_problems(field, kwargs[field.name])
            )
        problems.extend(_missing_problems(fields, value))
        problems.extend(_one_of_problems(one_of, one_of_required, value))
        problems.extend(_envelope_problems(cls, value))
        if problems:
            raise StructureFailure(problems)
        return cls(**kwargs)

    return structure


def _missing_problems(fields: Mapping[str, attrs.Attribute[Any]], value: Mapping[Any, Any]) -> list[Problem]:
    out = []
    for key, field in fields.items():
        if field.default is not attrs.NOTHING:
            continue
        if key not in value:
            out.append(Problem(path=(key,), message="required field missing"))
        elif value[key] is None:
            out.append(Problem(path=(key,), message="required field is null"))
    return out


def _one_of_problems(one_of: tuple[str, ...], required: bool, value: Mapping[Any, Any]) -> list[Problem]:
    present = [k for k in one_of if value.get(k) is not None]
    if len(present) > 1:
        return [Problem(path=(), message=f"set only one of {', '.join(present)}")]
    if required and one_of and not present:
        return [Problem(path=(), message=f"set one of {', '.join(one_of)}")]
    return []


def _envelope_problems(cls: type, value: Mapping[str, Any]) -> list[Problem]:
    kind = getattr(cls, "KIND", None)
    if kind is None:
        return []
    out = []
    if "kind" in value and value["kind"] != kind:
        out.append(Problem(path=("kind",), message=f"expected {kind}, got {describe(value['kind'])}"))
    versions: tuple[str, ...] = cls.API_VERSIONS  # type: ignore[attr-defined]
    if "apiVersion" in value and value["apiVersion"] not in versions:
        accepted = ", ".join(versions)
        message = f"{kind} is served as {accepted}, got {describe(value['apiVersion'])}"
        out.append(Problem(path=("apiVersion",), message=message))
    return out


def default_value(field: attrs.Attribute[Any]) -> Any:
    """The value a field takes when the YAML leaves it out (``attrs.NOTHING`` if it is required)."""
    default = field.default
    factory = getattr(default, "factory", None)
    return factory() if callable(factory) else default


def _unstructure_record(cls: type, conv: cattrs.Converter) -> Callable[[Any], dict[str, Any]]:
    fields = [(yaml_key(f), f) for f in record_fields(cls)]
    defaults = {f.name: default_value(f) for f in record_fields(cls)}

    def unstructure(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, field in fields:
            value = getattr(obj, field.name)
            default = defaults[field.name]
            if value is None or (value == default and not field.metadata.get("always")):
                continue
            kind = strip_optional(field.type) if is_optional(field.type) else field.type
            out[key] = conv.unstructure(value, kind)
        return out

    return unstructure


def _unstructure_list(kind: Any, conv: cattrs.Converter) -> Callable[[Any], list[Any]]:
    item = typing.get_args(kind)[0]
    return lambda seq: [conv.unstructure(v, item) for v in seq]


def _unstructure_map(kind: Any, conv: cattrs.Converter) -> Callable[[Any], dict[Any, Any]]:
    value_type = typing.get_args(kind)[1]
    return lambda mapping: {k: conv.unstructure(v, value_type) for k, v in mapping.items()}


def make_converter() -> cattrs.Converter:
    conv = cattrs.Converter()
    for kind in (int, float, str, bool):
        conv.register_structure_hook(kind, _scalar(kind))
    # Function hooks registered later win, so the generic ones come first.
    conv.register_structure_hook_factory(is_record, lambda cls: _record_hook(cls, conv))
    conv.register_structure_hook_factory(is_list, lambda kind: _list_hook(kind, conv))
    conv.register_structure_hook_factory(is_map, lambda kind: _map_hook(kind, conv))
    # StrEnum precedes str in every string enum's MRO, so this singledispatch hook beats the str one.
    conv.register_structure_hook(enum.StrEnum, _structure_enum)
    conv.register_structure_hook_factory(is_optional, lambda kind: _optional_hook(kind, conv))
    conv.register_structure_hook_func(is_int_or_string, _structure_int_or_string)
    conv.register_structure_hook_func(lambda kind: kind is Duration, _structure_duration)

    conv.register_unstructure_hook_factory(is_record, lambda cls: _unstructure_record(cls, conv))
    conv.register_unstructure_hook_func(lambda kind: kind is Duration, lambda d: d.text)
    conv.register_unstructure_hook(enum.StrEnum, lambda e: e.value)
    conv.register_unstructure_hook_func(is_int_or_string, lambda v: v)
    conv.register_unstructure_hook_factory(is_list, lambda kind: _unstructure_list(kind, conv))
    conv.register_unstructure_hook_factory(is_map, lambda kind: _unstructure_map(kind, conv))
    return conv


converter = make_converter()


def structure(data: Any, kind: type[T]) -> T:
    """Build ``kind`` from YAML-shaped ``data``; raises :class:`StructureFailure` with every problem."""
    result: T = converter.structure(data, kind)
    return result


def unstructure(obj: Any) -> Any:
    """The YAML-shaped form of ``obj`` (camelCase keys, defaults and unset fields left out)."""
    return converter.unstructure(obj)
