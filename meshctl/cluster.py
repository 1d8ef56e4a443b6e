"""``meshctl --kubeconfig FILE …``: the state-changing verbs against a Kubernetes cluster.

Without ``--kubeconfig`` every verb talks to the local mesh of ``--state-dir`` (istiod_lite's admin API).
With it — as with kubectl's global flag of the same name — ``apply``, ``namespace enroll|unenroll``,
``waypoint apply`` and ``canary set`` write the same objects to the cluster's API server instead, where
istiod_lite's watch picks them up (:mod:`istiod_lite.kube.cluster_ops`): they build identical manifests
either way, only the destination differs. The calls stay within the RBAC listed in deploy/README.md
(get, create and patch of the kinds users write). A flag, not ``$KUBECONFIG``, selects the cluster, so a
shell that happens to have a cluster configured never changes a local mesh's target by surprise.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
import trio

from istiod_lite.kube.api import RESOURCES, KubeApi, KubeApiError, load_config
from istiod_lite.kube.cluster_ops import MESHCTL, ClusterOperationError, apply_manifests, enroll_namespace
from meshcore.errors import MeshError

T = TypeVar("T")


def cluster_kubeconfig() -> Path | None:
    """The root command's ``--kubeconfig``, when this invocation targets a cluster."""
    context = click.get_current_context(silent=True)
    if context is None:
        return None
    obj = context.find_root().obj
    value = obj.get("kubeconfig") if isinstance(obj, dict) else None
    return value if isinstance(value, Path) else None


def run_on_cluster(kubeconfig: Path, call: Callable[[KubeApi], Awaitable[T]]) -> T:
    """Connect with meshctl's permissions, run ``call``; any failure → message on stderr, exit 1."""

    async def session() -> T:
        api = KubeApi.connect(load_config(kubeconfig), MESHCTL)
        try:
            return await call(api)
        finally:
            await api.aclose()

    try:
        return trio.run(session)
    except (KubeApiError, ClusterOperationError, MeshError) as exc:
        click.echo(f"meshctl: {exc}", err=True)
    except OSError as exc:
        click.echo(f"meshctl: cannot reach the Kubernetes API server: {exc}", err=True)
    raise SystemExit(1)


def apply_to_cluster(kubeconfig: Path, documents: Sequence[Mapping[str, Any]]) -> None:
    """Create or merge-patch each document, printing one kubectl-style line per object."""
    for line in run_on_cluster(kubeconfig, functools.partial(apply_manifests, documents=documents)):
        click.echo(line)


def get_object(kubeconfig: Path, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """One object exactly as the API server returns it (status included), or None."""

    async def call(api: KubeApi) -> dict[str, Any] | None:
        return await api.get(RESOURCES[kind], name, namespace)

    return run_on_cluster(kubeconfig, call)


def gateway_programmed(kubeconfig: Path, namespace: str, name: str) -> bool:
    """Whether the waypoint controller reports the Gateway ``Programmed`` (its Deployment and Service exist)."""
    found = get_object(kubeconfig, "Gateway", name, namespace) or {}
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Programmed" and c.get("status") == "True" for c in conditions)


def set_dataplane_mode(kubeconfig: Path, namespace: str, enrolled: bool) -> None:
    """Label (or unlabel: a merge patch with null) the namespace ``istio.io/dataplane-mode``."""
    run_on_cluster(kubeconfig, functools.partial(enroll_namespace, namespace=namespace,
                                                 mode="ambient" if enrolled else None))
    click.echo(f"Namespace/{namespace} {'labeled' if enrolled else 'unlabeled'} istio.io/dataplane-mode")


def get_from_cluster(kubeconfig: Path, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    """One object as a user would write it back (no status, no server-managed metadata), or None."""
    found = get_object(kubeconfig, kind, name, namespace)
    if found is None:
        return None
    # keep what a user writes: server-managed metadata must not go back in a patch
    metadata = {k: v for k, v in (found.get("metadata") or {}).items() if k in ("name", "namespace", "labels",
                                                                               "annotations")}
    return {**{k: v for k, v in found.items() if k != "status"}, "metadata": metadata}
