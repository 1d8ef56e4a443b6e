"""Only root or ztunnel's own user may hand ztunnel namespaces: socket mode 0600 and a SO_PEERCRED check."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from ztunnel.capture.zds import WorkloadInfo
from ztunnel.capture.zds_server import ZdsServer

pytestmark = pytest.mark.netns

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may live where nobody cannot read

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)
s.connect(sys.argv[1])
print(repr(s.recv(4096)))
"""


class Refuses:
    async def on_add(self, uid: str, info: WorkloadInfo | None, netns_fd: int) -> None:
        raise AssertionError("nobody must not get this far")

    async def on_del(self, uid: str) -> None:
        raise AssertionError("nobody must not get this far")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="am-zds-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="needs /usr/bin/python3 to run as nobody")
async def test_other_users_are_refused(shared_dir: Path) -> None:
    path = shared_dir / "ztunnel.sock"
    server = ZdsServer(path, Refuses())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        denied = await trio.run_process(
            [SYSTEM_PYTHON, "-c", CONNECT, str(path)],
            user=NOBODY,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert denied.returncode != 0 and b"PermissionError" in denied.stderr  # the file mode stops it

        path.chmod(0o666)  # even if the mode were loosened, the peer check closes without a hello
        refused = await trio.run_process(
            [SYSTEM_PYTHON, "-c", CONNECT, str(path)],
            user=NOBODY,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert refused.returncode == 0, refused.stderr
        assert refused.stdout.strip() == b"b''"
        assert not server.snapshot_received.is_set()
        nursery.cancel_scope.cancel()
