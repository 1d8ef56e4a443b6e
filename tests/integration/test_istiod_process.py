"""A real ``python -m istiod_lite`` process with two real push clients (TLS, node tokens from the state
directory), driven the way a user drives it: the admin API, files in ``--config-dir``, ``meshctl`` as a
subprocess, and a restart.

These tests show the process's plumbing — stores, pod inventory, push, ACK/NACK, status, restart, node
authorization — with the real translation; its rules have their own table-driven tests.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshcore.admin.client import http_request
from meshcore.identity.ca_client import CaClient, control_plane_context
from meshcore.identity.errors import CertificateRequestRefused
from meshcore.identity.manager import build_csr
from meshcore.identity.spiffe import Identity
from meshcore.push.backoff import Backoff
from meshcore.push.client import PushClient
from meshcore.push.protocol import JSON
from tests.support.processes import Component, Spawner

TYPES = ["workload", "service", "authorization"]
SEARCH = """\
apiVersion: v1
kind: Service
metadata: {name: search, namespace: prod}
spec:
  selector: {app: search}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: search, namespace: prod}
spec:
  replicas: 1
  selector: {matchLabels: {app: search}}
  template:
    metadata: {labels: {app: search}}
    spec:
      nodeName: node-0
      serviceAccountName: search
      containers: [{name: app, command: [sleep, "3600"]}]
"""
CART = "apiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {ports: [{port: 8080}]}\n"
CART_KEY = "shop/cart.shop.svc.cluster.local"
SEARCH_KEY = "prod/search.prod.svc.cluster.local"


class Rejected(Exception):
    pass


@attrs.define
class Proxy:
    """A transactional applier (copy, change, check, commit) that records every push it was given."""

    reject_containing: str | None = None
    state: dict[str, dict[str, JSON]] = attrs.field(factory=dict)
    pushes: list[tuple[str, list[str], list[str], bool]] = attrs.field(factory=list)

    def apply(self, type_name: str, upserts: dict[str, JSON], removed: list[str], full: bool) -> None:
        self.pushes.append((type_name, sorted(upserts), removed, full))
        new = {} if full else dict(self.state.get(type_name, {}))
        for key in removed:
            new.pop(key, None)
        new.update(upserts)
        bad = [k for k in upserts if self.reject_containing and self.reject_containing in k]
        if bad:
            raise Rejected(f"this proxy refuses {bad}")
        self.state[type_name] = new


@attrs.define
class Mesh:
    spawn: Spawner
    state: Path
    config: Path
    istiod: Component
    nursery: trio.Nursery

    @property
    def admin(self) -> tuple[str, int]:
        host, port = self.istiod.addresses["admin"].rsplit(":", 1)
        return host, int(port)

    @property
    def control(self) -> str:
        return self.istiod.addresses["control"]

    def token(self, node: str) -> str:
        return (self.state / "tokens" / f"{node}.token").read_text()

    async def proxy(self, node: str, proxy: Proxy) -> PushClient:
        client = PushClient(
            f"wss://{self.control}/v1/xds",
            self.token(node),
            control_plane_context((self.state / "root-cert.pem").read_bytes()),
            TYPES,
            proxy,
            backoff=Backoff(initial=0.05, maximum=0.2),
        )
        await self.nursery.start(client.run)
        return client

    async def call(self, method: str, path: str, body: str | None = None) -> Any:
        response = await http_request(*self.admin, method, path, body=body)
        return response.status, response.json()

    async def start(self, control_port: str = "0") -> None:
        args = ["--state-dir", str(self.state), "--config-dir", str(self.config), "--control-port", control_port]
        args += ["--admin-port", "0", "--nodes", "node-0,node-1", "--poll-interval", "0.05", "--debounce", "0.05"]
        start = functools.partial(self.spawn.python_module, "istiod", "istiod_lite", *args)
        self.istiod = await trio.to_thread.run_sync(start)

    async def stop(self) -> int:
        return await trio.to_thread.run_sync(self.istiod.stop)


@pytest.fixture
async def mesh(spawn: Spawner, tmp_path: Path) -> AsyncIterator[Mesh]:
    state, config = tmp_path / "state", tmp_path / "config"
    config.mkdir()
    (config / "search.yaml").write_text(SEARCH)
    async with trio.open_nursery() as nursery:
        m = Mesh(spawn, state, config, None, nursery)  # type: ignore[arg-type]  # started just below
        await m.start()
        yield m
        nursery.cancel_scope.cancel()


async def _until(predicate: Callable[[], bool], client: PushClient) -> None:
    while not predicate():
        await client.wait_changed()


async def _two_synced(mesh: Mesh, second: Proxy | None = None) -> tuple[list[PushClient], list[Proxy]]:
    proxies = [Proxy(), second or Proxy()]
    clients = [await mesh.proxy("node-0", proxies[0]), await mesh.proxy("node-1", proxies[1])]
    with trio.fail_after(5):
        for client in clients:
            await client.wait_synced()
    return clients, proxies


async def test_an_applied_service_reaches_both_proxies_within_a_second_as_a_one_resource_delta(mesh: Mesh) -> None:
    clients, proxies = await _two_synced(mesh)
    for proxy in proxies:
        assert sorted(p[0] for p in proxy.pushes) == sorted(TYPES) and all(p[3] for p in proxy.pushes)
    before = [len(p.pushes) for p in proxies]

    status, _ = await mesh.call("POST", "/apis/apply", CART)
    assert status == 200
    with trio.fail_after(1):
        for client, proxy, n in zip(clients, proxies, before, strict=True):
            await _until(lambda p=proxy, n=n: len(p.pushes) > n, client)  # type: ignore[misc]
    for proxy, n in zip(proxies, before, strict=True):
        assert proxy.pushes[n:] == [("service", [CART_KEY], [], False)]
        assert set(proxy.state["service"]) == {SEARCH_KEY, CART_KEY}


async def test_a_file_change_reaches_both_proxies_within_a_second_as_a_one_resource_delta(mesh: Mesh) -> None:
    clients, proxies = await _two_synced(mesh)
    before = [len(p.pushes) for p in proxies]
    (mesh.config / "cart.yaml").write_text(CART)
    with trio.fail_after(1):
        for client, proxy, n in zip(clients, proxies, before, strict=True):
            await _until(lambda p=proxy, n=n: len(p.pushes) > n, client)  # type: ignore[misc]
    for proxy, n in zip(proxies, before, strict=True):
        assert proxy.pushes[n:] == [("service", [CART_KEY], [], False)]


async def _meshctl(*args: str) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "meshctl", *args], capture_stdout=True, capture_stderr=True, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_a_push_a_proxy_cannot_apply_is_nacked_its_state_kept_and_proxy_status_shows_why(mesh: Mesh) -> None:
    clients, proxies = await _two_synced(mesh, second=Proxy(reject_containing="cart"))
    kept = json.loads(json.dumps(proxies[1].state))

    status, _ = await mesh.call("POST", "/apis/apply", CART)
    assert status == 200
    with trio.fail_after(2):
        while True:
            _, answer = await mesh.call("GET", "/debug/proxy-status")
            states = {(r["proxy"], r["type"]): r["state"] for r in answer["proxies"]}
            if states[("node-1", "service")] == "NACKED" and states[("node-0", "service")] == "SYNCED":
                break
            await trio.sleep(0.05)  # polling another process's HTTP API
    assert proxies[1].state == kept
    assert CART_KEY in proxies[0].state["service"]
    assert clients[1].synced  # a NACK does not cost the connection

    code, out, err = await _meshctl("proxy-status", "--state-dir", str(mesh.state))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "AUTHORIZATION", "SERVICE", "WORKLOAD"]
    assert lines[1].split() == ["node-0", "SYNCED", "SYNCED", "SYNCED"]
    assert lines[2].split() == ["node-1", "SYNCED", "NACKED", "SYNCED"]
    assert "node-1 service NACK" in lines[3] and f"Rejected: this proxy refuses ['{CART_KEY}']" in lines[3]

    code, out, _ = await _meshctl("proxy-status", "-o", "json", "--state-dir", str(mesh.state))
    rows = {(r["proxy"], r["type"]): r for r in json.loads(out)["proxies"]}
    assert rows[("node-1", "service")]["nack_error"] == f"Rejected: this proxy refuses ['{CART_KEY}']"
    assert rows[("node-1", "service")]["acked_version"] != rows[("node-1", "service")]["published_version"]

    text = (await http_request(*mesh.admin, "GET", "/metrics")).text()
    assert "pilot_total_xds_rejects 1" in text and "pilot_xds 2" in text


async def test_after_an_istiod_restart_proxies_keep_their_state_and_resync_to_an_identical_one(mesh: Mesh) -> None:
    clients, proxies = await _two_synced(mesh)
    await mesh.call("POST", "/apis/apply", CART)  # applied state must survive the restart too
    with trio.fail_after(2):
        for client, proxy in zip(clients, proxies, strict=True):
            await _until(lambda p=proxy: CART_KEY in p.state.get("service", {}), client)  # type: ignore[misc]
    served = [json.loads(json.dumps(p.state)) for p in proxies]
    versions = [dict(c.session.versions) for c in clients]
    control_port = mesh.control.rsplit(":", 1)[1]

    assert await mesh.stop() == 0
    with trio.fail_after(2):
        for client in clients:
            await client.wait_disconnected()
    assert not (mesh.state / "istiod.json").exists()
    assert [p.state for p in proxies] == served  # the data plane keeps serving its last good state

    pushes = [len(p.pushes) for p in proxies]
    await mesh.start(control_port=control_port)
    with trio.fail_after(5):
        for client, proxy, n in zip(clients, proxies, pushes, strict=True):
            await _until(lambda c=client, p=proxy, n=n: c.synced and len(p.pushes) >= n + 3, client)  # type: ignore[misc]
    for proxy, n in zip(proxies, pushes, strict=True):
        assert all(full for *_, full in proxy.pushes[n:])  # reconnect → full state
    assert [p.state for p in proxies] == served
    assert [dict(c.session.versions) for c in clients] == versions  # content-hash versions: same config


async def test_an_invalid_config_file_is_reported_and_its_previous_content_stays_in_force(mesh: Mesh) -> None:
    _clients, proxies = await _two_synced(mesh)
    served = [json.loads(json.dumps(p.state)) for p in proxies]
    path = mesh.config / "search.yaml"
    path.write_text(SEARCH.replace("port: 80,", "port: eighty,"))

    with trio.fail_after(2):
        while True:
            _, answer = await mesh.call("GET", "/apis/errors")
            if answer["errors"]:
                break
            await trio.sleep(0.05)
    assert list(answer["errors"]) == [str(path)]
    assert 'spec.ports[0].port: expected integer, got "eighty"' in answer["errors"][str(path)][0]

    _, listed = await mesh.call("GET", "/apis/resources?kind=svc")
    assert [i["manifest"]["spec"]["ports"][0]["port"] for i in listed["items"]] == [80]
    code, _out, err = await _meshctl("get", "svc", "--state-dir", str(mesh.state))
    assert code == 0 and f"warning: not in force ({path})" in err
    assert "not in force; its previous content stays" in mesh.istiod.stderr_tail(200)
    await trio.sleep(0.3)  # several polls and debounce periods: nothing may go out
    assert [p.state for p in proxies] == served


async def test_a_node_gets_certificates_only_for_identities_with_a_workload_on_it(mesh: Mesh) -> None:
    host, port = mesh.control.rsplit(":", 1)
    roots = (mesh.state / "root-cert.pem").read_bytes()
    search = Identity.parse("spiffe://cluster.local/ns/prod/sa/search")
    csr = build_csr(search, ec.generate_private_key(ec.SECP256R1()))

    node_0 = CaClient((host, int(port)), token=mesh.token("node-0"), roots_pem=roots)
    signed = await node_0.sign(search, csr, 3600)
    san = signed.chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [search.uri]

    node_1 = CaClient((host, int(port)), token=mesh.token("node-1"), roots_pem=roots)
    with pytest.raises(CertificateRequestRefused, match="NodeNotAuthorized"):
        await node_1.sign(search, csr, 3600)


async def test_a_missing_config_directory_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-m",
        "istiod_lite",
        "--state-dir",
        str(tmp_path / "s"),
        "--config-dir",
        str(tmp_path / "x"),
    ]
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1 and done.stdout == b""
    assert f"istiod_lite: config directory {tmp_path / 'x'} does not exist" in done.stderr.decode()
    assert "create it (it may be empty) or leave out --config-dir" in done.stderr.decode()


async def test_the_runners_pod_inventory_gives_workloads_their_addresses(mesh: Mesh) -> None:
    clients, proxies = await _two_synced(mesh)
    uid = "Kubernetes//Pod/prod/search-0"
    assert proxies[0].state["workload"][uid].get("addresses", []) == []  # placed from the Deployment
    pod = {
        "name": "search-0",
        "namespace": "prod",
        "ip": "127.9.1.5",
        "node": "node-0",
        "labels": {"app": "search"},
        "service_account": "search",
        "deployment": "search",
    }
    tmp = mesh.state / ".pods.json.tmp"
    tmp.write_text(json.dumps({"version": 1, "pods": [pod]}))
    tmp.replace(mesh.state / "pods.json")
    with trio.fail_after(2):
        for client, proxy in zip(clients, proxies, strict=True):
            await _until(lambda p=proxy: p.state["workload"][uid].get("addresses") == ["127.9.1.5"], client)  # type: ignore[misc]
    assert proxies[0].pushes[-1] == ("workload", [uid], [], False)
