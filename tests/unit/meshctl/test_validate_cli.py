"""``meshctl validate`` as a user runs it: a real subprocess, exit status and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[1] / "schemas" / "examples"


def meshctl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshctl", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_valid_directory_prints_one_summary_line() -> None:
    run = meshctl("validate", "-f", EXAMPLES)
    assert run.returncode == 0, run.stderr
    (line,) = run.stdout.splitlines()
    assert line == (
        "19 resources valid (3 AuthorizationPolicy, 1 Deployment, 3 DestinationRule, 1 Gateway, 1 HTTPRoute, "
        "1 Namespace, 2 PeerAuthentication, 1 Service, 1 ServiceAccount, 5 VirtualService), 2 warnings"
    )
    # The warnings (the bare canary's subsets) are shown but do not fail the run.
    assert run.stderr.count("warning: ") == 2


def test_invalid_file_exits_1_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "canary.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n"
        + (EXAMPLES / "canary.yaml")
        .read_text()
        .replace("name: search-service", "name: search-service\n  namespace: prod")
        .replace("weight: 5\n", 'weight: "5%"\n')
        .replace("subset: v1", "subset: v1\n            prot: {number: 80}")
    )
    run = meshctl("validate", "-f", bad, "-f", EXAMPLES / "workloads.yaml")
    assert run.returncode == 1
    assert run.stdout == ""
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {bad}: document 2 (VirtualService prod/search-service): "
        'spec.http[0].route[0].destination.prot: unknown field (did you mean "port"?)',
        f"error: {bad}: document 2 (VirtualService prod/search-service): "
        'spec.http[0].route[1].weight: expected integer, got "5%"',
    ]
    assert run.stderr.splitlines()[-1] == "2 errors found"


def test_missing_file_and_usage_errors(tmp_path: Path) -> None:
    run = meshctl("validate", "-f", tmp_path / "nope.yaml")
    assert run.returncode == 1
    assert "nope.yaml: no such file or directory" in run.stderr
    usage = meshctl("validate")
    assert usage.returncode == 2
    assert "Missing option '-f'" in usage.stderr


def test_top_level_help_lists_validate() -> None:
    run = meshctl("--help")
    assert run.returncode == 0
    assert "validate" in run.stdout


def test_json_output_for_tools(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((EXAMPLES / "reviews-canary.yaml").read_text().replace("weight: 50\n", "weight: 40\n", 1))
    run = meshctl("validate", "-o", "json", "-f", bad)
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["valid"] is False
    assert [(r["kind"], r["namespace"], r["name"], r["document"]) for r in report["resources"]] == [
        ("DestinationRule", "bookinfo", "reviews", 1)
    ]
    (error,) = report["errors"]
    assert (error["document_index"], error["path"], error["severity"]) == (2, "spec.http[0].route", "error")
    assert error["line"] == bad.read_text().splitlines().index("    - route:") + 1
    assert error["message"] == "destination weights must sum to 100, got 40 + 50 = 90"
    good = meshctl("validate", "-o", "json", "-f", EXAMPLES / "reviews-canary.yaml")
    assert good.returncode == 0 and json.loads(good.stdout)["valid"] is True
