"""Names of everything the fabric creates, all under one per-mesh prefix.

Why a prefix: the fabric creates kernel objects whose names share one space with the rest of the host
(``ip netns`` names, interface names). Every name we make — and every name a state file asks us to
delete — must carry our prefix, so a bug or a stale file can never remove something that is not ours.
Interface names are limited to 15 bytes (IFNAMSIZ), which bounds the prefix length.
"""

from __future__ import annotations

import re
import secrets

from ztunnel.capture.errors import UnsafeName

PREFIX_RE = re.compile(r"^am-[a-z0-9]{2,6}$")
_POD_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
IFNAMSIZ = 15
MAX_VETH_INDEX = 99_999


def new_prefix() -> str:
    """A fresh random prefix ``am-xxxxx`` for one mesh (or one test)."""
    return "am-" + "".join(secrets.choice(_ALPHABET) for _ in range(5))


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it has our shape, else refuse."""
    if not PREFIX_RE.match(prefix):
        raise UnsafeName(f"prefix {prefix!r} is not of the form am-[a-z0-9]{{2,6}}", prefix=prefix)
    return prefix


def check_pod_name(name: str) -> str:
    """Pod names become part of namespace names: DNS-label-like, at most 40 characters."""
    if not _POD_NAME_RE.match(name):
        raise UnsafeName(
            f"pod name {name!r} must be lower-case letters, digits and '-', at most 40 characters",
            prefix="(any)",
        )
    return name


def fabric_netns(prefix: str) -> str:
    """The namespace that holds the bridge (the wire between all local pods)."""
    return f"{check_prefix(prefix)}-fabric"


def bridge(prefix: str) -> str:
    """The bridge device inside the fabric namespace."""
    return f"{check_prefix(prefix)}-br"


def pod_netns(prefix: str, pod: str) -> str:
    """The pod's own network namespace."""
    return f"{check_prefix(prefix)}-pod-{check_pod_name(pod)}"


def host_veth(prefix: str, index: int) -> str:
    """The bridge-side end of pod number ``index``'s veth pair (the pod side is ``eth0``)."""
    if not 0 <= index <= MAX_VETH_INDEX:
        raise UnsafeName(f"veth index {index} outside 0..{MAX_VETH_INDEX}", prefix=prefix)
    name = f"{check_prefix(prefix)}v{index}"
    assert len(name) <= IFNAMSIZ, name
    return name


def assert_ours(prefix: str, name: str) -> str:
    """Refuse any name a state file lists that is not under ``prefix``."""
    check_prefix(prefix)
    if not (name.startswith(prefix + "-") or name.startswith(prefix + "v")) or not re.fullmatch(
        r"[a-z0-9-]+", name
    ):
        raise UnsafeName(f"{name!r} is not one of ours", prefix=prefix)
    return name
