"""The API door without a server: configuration loading, declared verbs, and watch lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from istiod_lite.kube.api import (
    RESOURCES,
    KubeApiError,
    WatchEvent,
    WatchExpired,
    _watch_event,
    load_config,
)


def kubeconfig(path: Path, user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return path


def test_a_token_kubeconfig_loads(tmp_path: Path) -> None:
    config = load_config(kubeconfig(tmp_path / "config", {"token": "abc"}))
    assert config.cluster.server == "https://127.0.0.1:6443"


def test_exec_credential_plugins_are_refused_with_a_way_out(tmp_path: Path) -> None:
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "gke-gcloud-auth-plugin"}}
    with pytest.raises(KubeApiError, match=r"exec credential plugins are not supported.*use a token"):
        load_config(kubeconfig(tmp_path / "config", exec_user))


def test_a_missing_kubeconfig_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KubeApiError, match="pass --kubeconfig"):
        load_config(tmp_path / "nope")


def test_every_crd_kind_is_a_resource_with_its_storage_version() -> None:
    assert RESOURCES["VirtualService"].api_version == "networking.istio.io/v1"
    assert RESOURCES["Gateway"].plural == "gateways"
    assert RESOURCES["Namespace"].namespaced is False
    assert RESOURCES["TokenReview"].api_version == "authentication.k8s.io/v1"


POD = {"metadata": {"name": "p", "namespace": "n", "resourceVersion": "7"}}


@pytest.mark.parametrize(
    ("line", "outcome"),
    [
        (json.dumps({"type": "ADDED", "object": POD}),
         WatchEvent("ADDED", {**POD, "apiVersion": "v1", "kind": "Pod"})),
        (json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}),
         WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "9"}, "apiVersion": "v1", "kind": "Pod"})),
        (json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}), WatchExpired),
        (json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}), KubeApiError),
        ("<html>proxy error</html>", KubeApiError),
        (json.dumps({"object": POD}), KubeApiError),
    ],
)
def test_watch_lines(line: str, outcome: Any) -> None:
    if isinstance(outcome, WatchEvent):
        assert _watch_event("watch pods", line, RESOURCES["Pod"]) == outcome
    else:
        with pytest.raises(outcome):
            _watch_event("watch pods", line, RESOURCES["Pod"])
