"""Errors of the Linux networking helpers, each naming what to check."""

from __future__ import annotations

from meshcore.errors import MeshError


class NetnsError(MeshError):
    """A network namespace could not be opened or entered."""

    hint = (
        "is {path} a network namespace (ls -l /run/netns) and does this process run as root (CAP_SYS_ADMIN)?"
    )


class NetnsRestoreError(MeshError):
    """A worker thread could not return to its original namespace; it must not run anything else."""

    hint = "the original namespace fd was closed or revoked; restart the process, its thread pool is unsafe"


class SocketOptionError(MeshError):
    """A capture socket option could not be set or read."""

    hint = "option {option} needs CAP_NET_ADMIN (run as root) and a kernel with netfilter/tproxy support"


class OriginalDestinationUnavailable(MeshError):
    """SO_ORIGINAL_DST found no conntrack entry: the connection was not redirected by our rules."""

    response_flag = "NR"
    hint = "was this connection captured by the in-pod nat REDIRECT rules (iptables-save -t nat in the pod)?"
