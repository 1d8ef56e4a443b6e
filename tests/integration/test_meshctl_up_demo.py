"""`meshctl demo --duration` as `make demo` runs it: a real mesh, the canary story, exit 0, nothing left."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import Spawner

MESHCTL = str(Path(sys.executable).with_name("meshctl"))


@pytest.mark.slow
def test_short_demo_shows_the_split_the_failure_and_the_rollback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = subprocess.run(
        [MESHCTL, "demo", "--duration", "16", "--state-dir", str(state)],
        capture_output=True, text=True, timeout=180, check=False, cwd=tmp_path,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "reading every number from the waypoint's metrics: http://127." in out
    for act in ("act 1", "act 2", "act 3"):
        assert f"{act} at" in out and f"{act}:" in out  # announced live, then summarised

    split = re.search(r"split: v2 took ([\d.]+)% of requests", out)
    assert split is not None, out
    assert 0.0 < float(split.group(1)) < 20.0  # weight 5 of 100, from a few hundred requests

    failure = re.search(r"failure: v2 error rate (\d+)% while v1 stayed at (\d+)%", out)
    assert failure is not None, out
    assert int(failure.group(1)) >= 50  # v2 answers 503 (Istio's default retries hit v2 again)
    assert int(failure.group(2)) == 0

    rollback = re.search(r"rollback: v2 received (\d+) requests after it", out)
    assert rollback is not None, out
    assert int(rollback.group(1)) <= 5  # only requests sent while the new weights were on their way

    assert "mesh stopped; every process it started has exited" in out
    assert not (state / "status.json").exists()
    assert not (state / "istiod.json").exists()


@pytest.mark.slow
def test_ctrl_c_during_the_demo_drains_the_mesh(tmp_path: Path, spawn: Spawner) -> None:
    state = tmp_path / "state"
    demo = spawn.start("demo", [MESHCTL, "demo", "--duration", "60", "--state-dir", str(state)], wait_ready=False)
    demo.wait_for_line(lambda line: line.startswith("act 1 at"), timeout=90)
    pids = [p["pid"] for p in json.loads((state / "status.json").read_text())["pods"]]
    assert pids and all(isinstance(pid, int) for pid in pids)

    demo.signal(signal.SIGINT)
    assert demo.proc.wait(timeout=30) == 130
    demo.wait_for_line(lambda line: "interrupted; the demo mesh was drained" in line, timeout=5)
    assert not (state / "status.json").exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
