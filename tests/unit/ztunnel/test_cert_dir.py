"""Certificates from --cert-dir: the documented layout loads; every problem is listed with its identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509

from meshcore.identity.errors import CertificateUnavailable
from meshcore.identity.spiffe import Identity
from tests.support.ztunnel_mesh import write_cert_dir
from ztunnel.cert_dir import CHAIN_FILE, KEY_FILE, ROOT_FILE, CertDirError, identity_dir, load_cert_dir
from ztunnel.certificates import CertificateStore, certificate_state

WEB = Identity("cluster.local", "prod", "web")
DB = Identity("cluster.local", "prod", "db")


def test_layout_loads_each_identity(tmp_path: Path) -> None:
    write_cert_dir(tmp_path / "certs", [WEB, DB], tmp_path / "ca")
    loaded = load_cert_dir(tmp_path / "certs", [WEB, DB])
    assert set(loaded) == {WEB, DB}
    assert loaded[WEB].identity == WEB and len(loaded[WEB].roots) == 1


def test_missing_root_bundle(tmp_path: Path) -> None:
    with pytest.raises(CertDirError, match=ROOT_FILE):
        load_cert_dir(tmp_path, [WEB])


def test_every_bad_identity_is_reported(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_cert_dir(certs, [WEB, DB], tmp_path / "ca")
    (identity_dir(certs, DB) / KEY_FILE).unlink()
    other = Identity("cluster.local", "prod", "other")
    identity_dir(certs, other).mkdir(parents=True)
    for name in (CHAIN_FILE, KEY_FILE):  # web's certificate filed under "other"
        (identity_dir(certs, other) / name).write_bytes((identity_dir(certs, WEB) / name).read_bytes())
    with pytest.raises(CertDirError) as caught:
        load_cert_dir(certs, [WEB, DB, other])
    message = str(caught.value)
    assert "spiffe://cluster.local/ns/prod/sa/db: cannot read" in message
    assert "is a certificate for spiffe://cluster.local/ns/prod/sa/web" in message
    assert "root-cert.pem plus <namespace>/<service-account>" in message


def test_store_builds_contexts_and_dumps_state(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_cert_dir(certs, [WEB], tmp_path / "ca")
    store = CertificateStore(lambda identity: load_cert_dir(certs, [identity])[identity])
    problems = store.ensure([WEB, DB])
    assert list(problems) == [DB] and store.has(WEB) and not store.has(DB)
    assert store.server_context(WEB) is not store.client_context(WEB)
    dump = {entry["identity"]: entry for entry in store.dump()}
    assert dump[str(WEB)]["state"] == "Available" and dump[str(DB)]["state"] == "Unavailable"
    cert = load_cert_dir(certs, [WEB])[WEB]
    assert certificate_state(cert, cert.not_after.timestamp()) == "Expired"
    assert certificate_state(cert, cert.not_before.timestamp() - 1) == "NotYetValid"
    with pytest.raises(CertificateUnavailable, match=r"no certificate for spiffe://cluster\.local/ns/prod/sa/db"):
        store.client_context(DB)


async def test_a_renewed_certificate_is_served_by_the_existing_contexts(tmp_path: Path) -> None:
    """Listeners hold their SSLContext for life; a renewal must reach them without a rebuild."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    write_cert_dir(first_dir, [WEB], tmp_path / "ca")
    write_cert_dir(second_dir, [WEB], tmp_path / "ca")  # same CA, a new leaf
    first, second = load_cert_dir(first_dir, [WEB])[WEB], load_cert_dir(second_dir, [WEB])[WEB]
    assert first.serial != second.serial
    store = CertificateStore()
    store.install(first)
    server_ctx, client_ctx = store.server_context(WEB), store.client_context(WEB)
    store.install(second)
    assert store.server_context(WEB) is server_ctx and store.serial(WEB) == second.serial

    client_side, server_side = trio.testing.memory_stream_pair()
    client = trio.SSLStream(client_side, client_ctx, server_hostname=None)
    server = trio.SSLStream(server_side, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        await client.do_handshake()
    der = client.getpeercert(binary_form=True)
    assert der is not None
    assert f"{x509.load_der_x509_certificate(der).serial_number:x}" == second.serial
