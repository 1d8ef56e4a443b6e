"""Smoke run of ``bench/push_bench.py`` with small numbers: the bench runs, every client receives the
whole state, and the byte counts mean what the report says (no timing assertions)."""

from __future__ import annotations

import json

import pytest
import structlog

from bench.push_bench import main, run_bench, synthetic_snapshot


async def test_a_small_push_bench_reports_full_and_delta_bytes_that_match_the_pushed_content() -> None:
    result = await run_bench(workloads=20, services=5, clients=2, timeout=30)
    full, delta = result.phases
    content = synthetic_snapshot(20, 5)
    body_bytes = sum(
        len(json.dumps(body, separators=(",", ":"))) for bodies in content.values() for body in bodies.values()
    )
    assert full.bytes_per_client > body_bytes  # every body, plus framing and keys
    assert full.bytes_total >= 2 * body_bytes
    one_service = len(json.dumps(next(iter(content["service"].values())), separators=(",", ":")))
    assert one_service < delta.bytes_per_client < full.bytes_per_client / 4
    assert full.name == "full push" and delta.name == "one-service delta"


def test_the_command_line_prints_a_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert main(["--workloads", "4", "--services", "2", "--clients", "1", "--json"]) == 0
    finally:
        structlog.reset_defaults()  # main() configured process-wide logging
    out = capsys.readouterr().out
    report = json.loads(out)
    assert (report["workloads"], report["services"], report["clients"]) == (4, 2, 1)
    assert report["translate_seconds"] > 0
    assert [p["name"] for p in report["phases"]] == ["full push", "one-service delta"]
