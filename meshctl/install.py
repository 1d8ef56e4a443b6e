"""``meshctl install``: the deploy/ manifests with overrides, printed (``--dry-run``) or applied to a cluster.

``--set key=value`` (repeatable) takes the values of :class:`istiod_lite.kube.manifests.InstallValues`:
``image``, ``imagePullPolicy``, ``trustDomain``, ``logLevel`` and
``resources.<istiod|ztunnel|node-agent>.<requests|limits>.<cpu|memory>``. Without overrides the objects are
exactly what ``kubectl kustomize deploy/`` renders.

Applying hands the rendered YAML to ``kubectl apply --server-side``: kubectl already knows the user's
kubeconfig (including ``exec:`` credential plugins, which the Python client cannot run) and orders CRDs
before the objects that use them.
"""

from __future__ import annotations

import shutil
import subprocess

import click

from istiod_lite.kube.install_values import InstallValues, InvalidInstallValue
from istiod_lite.kube.manifests import dump, render


def _pairs(settings: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{setting!r} is not key=value", param_hint="--set")
        pairs.append((key.strip(), value.strip()))
    return pairs


def rendered_yaml(settings: tuple[str, ...] = ()) -> str:
    """The install as multi-document YAML, with ``--set`` overrides applied."""
    return dump(render(InstallValues().with_overrides(_pairs(settings))))


@click.command()
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a value: image, imagePullPolicy, trustDomain, logLevel, "
              "resources.<istiod|ztunnel|node-agent>.<requests|limits>.<cpu|memory>.")
@click.option("--dry-run", is_flag=True, help="Print the manifests instead of applying them.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="kubeconfig for kubectl (default: kubectl's own).")
@click.option("--context", help="kubeconfig context for kubectl.")
def install(settings: tuple[str, ...], dry_run: bool, kubeconfig: str | None, context: str | None) -> None:
    """Install the mesh on Kubernetes (namespace istio-system): CRDs, istiod, ztunnel and node-agent DaemonSets."""
    try:
        text = rendered_yaml(settings)
    except InvalidInstallValue as exc:
        raise click.UsageError(str(exc)) from exc
    if dry_run:
        click.echo(text, nl=False)
        return
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise click.ClickException("kubectl is not on PATH; install it, or use --dry-run and apply the output yourself")
    command = [kubectl, "apply", "--server-side", "--field-manager=meshctl", "-f", "-"]
    if kubeconfig:
        command[1:1] = ["--kubeconfig", kubeconfig]
    if context:
        command[1:1] = ["--context", context]
    result = subprocess.run(command, input=text, text=True, check=False)
    if result.returncode != 0:
        raise click.ClickException(f"kubectl apply failed (exit {result.returncode}); its message is above")
