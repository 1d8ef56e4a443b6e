"""Publish the mesh's trust bundle as the ``istio-ca-root-cert`` ConfigMap (key ``root-cert.pem``).

That is where Istio's proxies read the roots they verify istiod with, and where the ztunnel DaemonSet in
deploy/ mounts it from. Only istiod's own namespace is written (a namespaced Role, not a ClusterRole):
our ztunnels and waypoints run there or get the bundle through their push connection.
"""

from __future__ import annotations

from typing import Any

from istiod_lite.kube.api import RESOURCES, KubeApi

CONFIGMAP_NAME = "istio-ca-root-cert"
ROOT_CERT_KEY = "root-cert.pem"


def root_cert_configmap(namespace: str, bundle_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace, "labels": {"istio.io/config": "true"}},
        "data": {ROOT_CERT_KEY: bundle_pem},
    }


async def publish_root_cert(api: KubeApi, namespace: str, bundle_pem: str) -> bool:
    """Create or update the ConfigMap; returns whether anything was written."""
    resource = RESOURCES["ConfigMap"]
    existing = await api.get(resource, CONFIGMAP_NAME, namespace)
    desired = root_cert_configmap(namespace, bundle_pem)
    if existing is None:
        await api.create(resource, desired)
        return True
    if (existing.get("data") or {}).get(ROOT_CERT_KEY) == bundle_pem:
        return False
    await api.patch(resource, CONFIGMAP_NAME, namespace, {"data": desired["data"]})
    return True
