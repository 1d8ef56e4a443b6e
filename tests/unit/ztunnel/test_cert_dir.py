"""Certificates from --cert-dir: the documented layout loads; every problem is listed with its identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshcore.identity.errors import CertificateUnavailable
from meshcore.identity.spiffe import Identity
from tests.integration.ztunnel_mesh import write_cert_dir
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
