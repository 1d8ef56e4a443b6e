"""``python -m istiod_lite.kube``: istiod_lite on Kubernetes (what the deploy/ istiod Deployment runs).

The same control plane as ``python -m istiod_lite``, with the cluster as its inputs: config and pods from
the Kubernetes store, ztunnels authenticated by TokenReview, the waypoint controller, and the trust bundle
published as the ``istio-ca-root-cert`` ConfigMap. The CA is the plugged-in one when ``--plugged-ca-dir``
holds Istio's ``cacerts`` files, else self-signed in ``--state-dir``. Prints the readiness line once the
store has listed everything and the first config is published.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from istiod_lite.ca import CertificateAuthority
from istiod_lite.kube import rbac_usage
from istiod_lite.kube.api import KubeApi, KubeApiError, load_config
from istiod_lite.kube.root_cert import publish_root_cert
from istiod_lite.kube.store import KubernetesStore
from istiod_lite.kube.tokenreview import TokenReviewAuthenticator
from istiod_lite.kube.views import ClusterConfig, ClusterPods
from istiod_lite.kube.waypoint_controller import WaypointController
from istiod_lite.kube.waypoint_objects import WaypointSettings
from istiod_lite.server import Istiod, IstiodOptions
from meshcore.errors import MeshError
from meshcore.ready import announce_ready
from meshcore.telemetry.logs import configure_logging, get_logger

log = get_logger("istiod_lite.kube.main")

PLUGGED_FILES = ("ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem")
ROOT_CERT_RECHECK = 60.0


@attrs.frozen(kw_only=True)
class KubeArgs:
    options: IstiodOptions
    kubeconfig: Path | None
    namespace: str
    trust_domain: str
    plugged_ca_dir: Path | None
    waypoint: WaypointSettings
    log_level: str


def parse_args(argv: Sequence[str]) -> KubeArgs:
    parser = argparse.ArgumentParser(prog="python -m istiod_lite.kube", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--plugged-ca-dir", type=Path, help="Istio cacerts layout; used when all four files exist")
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster service account, then $KUBECONFIG")
    parser.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "istio-system"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--admin-host", default="0.0.0.0", help="admin/readiness address (NetworkPolicy limits it)")
    parser.add_argument("--control-port", type=int, default=15012)
    parser.add_argument("--admin-port", type=int, default=15014)
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument("--waypoint-image", required=True, help="image of generated waypoint Deployments")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    return KubeArgs(
        options=IstiodOptions(
            state_dir=args.state_dir, host=args.host, admin_host=args.admin_host,
            control_port=args.control_port, admin_port=args.admin_port,
        ),
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        trust_domain=args.trust_domain,
        plugged_ca_dir=args.plugged_ca_dir,
        waypoint=WaypointSettings(image=args.waypoint_image, trust_domain=args.trust_domain,
                                  istiod_address=f"istiod.{args.namespace}.svc:{args.control_port}",
                                  log_level=args.log_level),
        log_level=args.log_level,
    )


def load_ca(args: KubeArgs) -> CertificateAuthority:
    plugged = args.plugged_ca_dir
    if plugged is not None and all((plugged / name).is_file() for name in PLUGGED_FILES):
        return CertificateAuthority.from_plugged_dir(plugged, trust_domain=args.trust_domain)
    log.warning("no plugged-in CA; using a self-signed root in the state directory (lost if the pod restarts)")
    return CertificateAuthority.load_or_create(args.options.state_dir, trust_domain=args.trust_domain)


async def keep_root_cert_published(
    api: KubeApi, namespace: str, ca: CertificateAuthority, *, task_status: trio.TaskStatus[None]
) -> None:
    started = False
    while True:
        try:
            await publish_root_cert(api, namespace, ca.trust_bundle_pem().decode())
        except KubeApiError as exc:
            log.warning("publishing istio-ca-root-cert failed; retrying", error=str(exc))
        if not started:
            started = True
            task_status.started()
        await trio.sleep(ROOT_CERT_RECHECK)


async def serve(args: KubeArgs) -> None:
    api = KubeApi.connect(load_config(args.kubeconfig), rbac_usage.ISTIOD)
    store = KubernetesStore(api)
    ca = load_ca(args)
    controller = WaypointController(api, store, args.waypoint)

    async def root_cert(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await keep_root_cert_published(api, args.namespace, ca, task_status=task_status)

    istiod = Istiod(
        args.options,
        ca=ca,
        config_stores=[ClusterConfig(store)],
        pod_source=ClusterPods(store),
        authenticator=TokenReviewAuthenticator(api, namespace=args.namespace),
        background=[store.run, controller.run, root_cert],
    )
    try:
        async with trio.open_nursery() as nursery:
            addresses = await nursery.start(istiod.run)
            announce_ready("istiod", addresses.to_json(), translator=istiod.translator_name, store="kubernetes")
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal received; stopping", signal=signal.Signals(signum).name)
                    break
            istiod.admin.close(grace=2.0)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await api.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging(args.log_level, component="istiod")
    failures: list[MeshError] = []
    try:
        trio.run(serve, args)
    except* MeshError as group:
        failures.extend(e for e in group.exceptions if isinstance(e, MeshError))
    for failure in failures:
        log.error("istiod_failed", error=str(failure))
        print(f"istiod_lite: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
