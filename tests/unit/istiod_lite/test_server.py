"""istiod_lite's wiring decisions that need no sockets: where the admin API binds, state files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from istiod_lite.server import Istiod, IstiodOptions, StartupError


@pytest.mark.parametrize(
    ("host", "admin_host", "expected"),
    [
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.12.0.1", None, "127.12.0.1"),  # a local mesh's own address: meshes side by side never clash
        ("::1", None, "::1"),
        ("0.0.0.0", None, "127.0.0.1"),  # control port for other machines, admin API stays local
        ("10.0.0.5", None, "127.0.0.1"),
        ("localhost", None, "localhost"),
        ("0.0.0.0", "0.0.0.0", "0.0.0.0"),  # widened only when asked
    ],
)
def test_the_unauthenticated_admin_api_stays_on_loopback_unless_asked(
    host: str, admin_host: str | None, expected: str
) -> None:
    options = IstiodOptions(state_dir=Path("unused"), host=host, admin_host=admin_host)
    assert options.effective_admin_host == expected


def test_state_files_root_and_per_node_tokens_are_written_with_safe_modes(tmp_path: Path) -> None:
    istiod = Istiod(IstiodOptions(state_dir=tmp_path / "state", nodes=("node-0", "node-1")))
    tokens = tmp_path / "state" / "tokens"
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
    for node in ("node-0", "node-1"):
        path = tokens / f"{node}.token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == istiod.tokens.issue(node)
    assert (tmp_path / "state" / "root-cert.pem").read_bytes() == istiod.ca.trust_bundle_pem()
    again = Istiod(IstiodOptions(state_dir=tmp_path / "state", nodes=("node-0",)))
    assert (tokens / "node-0.token").read_text() == again.tokens.issue("node-0")  # stable over restarts


def test_a_missing_config_directory_is_a_startup_error_saying_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="create it \\(it may be empty\\) or leave out --config-dir"):
        Istiod(IstiodOptions(state_dir=tmp_path / "state", config_dir=tmp_path / "missing"))
