"""Errors of transparent capture, each naming what an operator should check."""

from __future__ import annotations

from meshcore.errors import MeshError


class CommandFailed(MeshError):
    """An ``ip``/``iptables`` command exited non-zero."""

    hint = "ran `{command}`; netns mode needs root, iproute2 and iptables (nft backend); stderr: {stderr}"


class FabricError(MeshError):
    """The local network fabric cannot do what was asked."""

    hint = "{detail}"


class UnsafeName(MeshError):
    """A name would step outside this mesh's own prefix; refused so nothing of the host is touched."""

    hint = "names must start with the mesh prefix {prefix!r} and use only [a-z0-9-]; is the state file ours?"


class ZdsProtocolError(MeshError):
    """A ZDS message was malformed or out of order."""

    hint = "node agent and ztunnel must speak the same ZDS version; {detail}"


class ZdsNack(MeshError):
    """ztunnel refused a workload request; its error text is carried along."""

    hint = "see the ztunnel log for pod {uid}; the node agent keeps the pod and retries on reconnect"


class UnknownPod(MeshError):
    """The node agent was asked about a pod it does not capture."""

    hint = "pods captured on this node: {known}"
