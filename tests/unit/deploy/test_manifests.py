"""deploy/: valid for Kubernetes 1.30+, identical from kustomize and ``meshctl install``, current, and with
the Istio ambient semantics the components rely on (capabilities, host paths, token audience, probes)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from click.testing import CliRunner

from istiod_lite.kube import manifests, tokenreview
from istiod_lite.kube.install_values import InstallValues
from istiod_lite.kube.manifests import base_files, kustomization, render
from istiod_lite.kube.waypoint_objects import WaypointSettings, desired_objects
from meshctl.install import install

DEPLOY = Path(__file__).parents[3] / "deploy"


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


VERSIONS = sorted({v for v in kubernetes_validate.utils.all_versions() if _minor(v) >= (1, 30)}, key=_minor)
"""Every Kubernetes version the installed kubernetes-validate has schemas for, from 1.30 on."""


def kustomize() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def dry_run(*settings: str) -> list[dict[str, Any]]:
    args = ["--dry-run"]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(install, args)
    assert result.exit_code == 0, result.output
    return [doc for doc in yaml.safe_load_all(result.output) if doc]


def by_key(objects: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], Mapping[str, Any]]:
    keyed: dict[tuple[str, str, str], Mapping[str, Any]] = {}
    for obj in objects:
        key = (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        assert key not in keyed, f"{key} rendered twice"
        keyed[key] = obj
    return keyed


def one(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any]:
    return by_key(objects)[(kind, "" if kind.startswith("Cluster") or kind in ("Namespace",
                                                                             "CustomResourceDefinition")
                            else "istio-system", name)]


def test_the_supported_versions_include_1_30_and_later() -> None:
    assert VERSIONS[0] == "1.30.0" and len(VERSIONS) >= 2


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_is_valid_strict(version: str) -> None:
    overridden = dry_run("image=registry.example/mesh:2", "resources.ztunnel.limits.cpu=2")
    waypoint = desired_objects(
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
         "metadata": {"name": "wp", "namespace": "prod", "uid": "0f6c1f9e-1111-4b5e-9c1a-3a1f2b3c4d5e"},
         "spec": {"gatewayClassName": "istio-waypoint"}},
        WaypointSettings(image="ambient-mesh:0.1.0"),
    ).values()
    objects = [*kustomize(), *overridden, *waypoint]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)  # raises with the field path if not
    assert len(objects) > 20


def test_kubectl_kustomize_and_meshctl_install_render_identical_objects() -> None:
    assert by_key(kustomize()) == by_key(dry_run())
    assert by_key(dry_run()) == by_key(render())


def test_the_deploy_files_are_current() -> None:
    """deploy/*.yaml are generated; run `python -m istiod_lite.kube.manifests deploy/` after changing the code."""
    for name, objects in base_files().items():
        on_disk = [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]
        assert on_disk == objects, f"deploy/{name} is stale"
    assert yaml.safe_load((DEPLOY / "kustomization.yaml").read_text()) == kustomization()
    for resource in kustomization()["resources"]:
        assert (DEPLOY / resource).is_file(), f"kustomization names missing deploy/{resource}"


def test_ztunnel_daemonset_is_ambient_shaped() -> None:
    daemonset = one(render(), "DaemonSet", "ztunnel")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["privileged"] is False
    assert set(security["capabilities"]["add"]) == {"NET_ADMIN", "SYS_ADMIN", "NET_RAW"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cni-ztunnel-sock-dir"]["hostPath"]["path"] == "/var/run/ztunnel"
    (token,) = volumes["istio-token"]["projected"]["sources"]
    assert token["serviceAccountToken"]["audience"] == tokenreview.CA_AUDIENCE
    assert container["readinessProbe"]["httpGet"]["port"] == 15021
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    # The token the CA accepts is exactly this pod's: service account and namespace the authenticator expects.
    assert tokenreview.service_account_user(daemonset["metadata"]["namespace"], pod["serviceAccountName"]) == (
        "system:serviceaccount:istio-system:ztunnel"
    )


def test_node_agent_runs_in_the_host_network_with_proc_and_the_shared_socket_dir() -> None:
    daemonset = one(render(), "DaemonSet", "istio-cni-node")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    assert volumes == {"cni-ztunnel-sock-dir": "/var/run/ztunnel", "host-proc": "/proc",
                       "cni-netns-dir": "/var/run/netns"}
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is False
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}


def test_istiod_service_exposes_control_and_admin_and_everything_is_in_istio_system() -> None:
    objects = render()
    service = one(objects, "Service", "istiod")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"tls-control": 15012, "http-admin": 15014}
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole",
                                                          "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"istio-system"}
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"} == {
        f"{p}.{g}" for g, p in [("networking.istio.io", "virtualservices"), ("networking.istio.io", "destinationrules"),
                                ("security.istio.io", "authorizationpolicies"),
                                ("security.istio.io", "peerauthentications"),
                                ("gateway.networking.k8s.io", "gateways"), ("gateway.networking.k8s.io", "httproutes")]
    }


def test_only_istio_system_reaches_istiods_admin_port() -> None:
    policy = one(render(), "NetworkPolicy", "istiod")
    deployment = one(render(), "Deployment", "istiod")
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    control, admin = policy["spec"]["ingress"]
    assert control == {"ports": [{"port": 15012, "protocol": "TCP"}]}  # proxies on every node
    assert admin["ports"] == [{"port": 15014, "protocol": "TCP"}]
    assert admin["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}]


def test_install_overrides_reach_every_component() -> None:
    objects = dry_run("image=registry.example/mesh:2", "trustDomain=example.org", "logLevel=debug",
                      "resources.istiod.requests.cpu=500m", "imagePullPolicy=Always")
    containers = [c for o in objects if o["kind"] in ("Deployment", "DaemonSet")
                  for c in o["spec"]["template"]["spec"]["containers"]]
    assert len(containers) == 3
    assert {c["image"] for c in containers} == {"registry.example/mesh:2"}
    assert {c["imagePullPolicy"] for c in containers} == {"Always"}
    assert all(c["args"][c["args"].index("--log-level") + 1] == "debug" for c in containers)
    istiod = one(objects, "Deployment", "istiod")["spec"]["template"]["spec"]["containers"][0]
    assert istiod["args"][istiod["args"].index("--trust-domain") + 1] == "example.org"
    assert istiod["resources"]["requests"]["cpu"] == "500m"
    assert istiod["resources"]["requests"]["memory"] == "128Mi"  # untouched values keep their defaults


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("colour=blue", "unknown key"),
        ("resources.ztunnel.requests.gpu=1", "unknown key"),
        ("logLevel=loud", "use one of debug, info, warning, error"),
        ("image=", "empty value"),
        ("novalue", "is not key=value"),
        ("trustDomain=spiffe://x", "DNS-like name"),
        ("resources.ztunnel.requests.cpu=lots", "not a Kubernetes quantity"),
    ],
)
def test_bad_settings_are_refused_by_name(setting: str, message: str) -> None:
    result = CliRunner().invoke(install, ["--dry-run", "--set", setting])
    assert result.exit_code == 2
    assert message in result.output


def test_install_values_defaults_are_the_deploy_defaults() -> None:
    assert render(InstallValues()) == render() == manifests.render(None)


def test_the_image_holds_every_package_the_manifests_run() -> None:
    import tomllib

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    includes = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in includes["include"]]
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile
    modules = {arg for o in render() if o["kind"] in ("Deployment", "DaemonSet")
               for c in o["spec"]["template"]["spec"]["containers"] for arg in c["args"][2:3]}
    assert {module.split(".")[0] for module in modules} <= set(packages)
