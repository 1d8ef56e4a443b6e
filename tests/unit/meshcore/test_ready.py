"""The readiness line: one JSON line on stdout, exactly what the process harness waits for."""

from __future__ import annotations

import io
import json
import sys
import textwrap
from pathlib import Path

import pytest

from meshcore.ready import InvalidReadyAnnouncement, announce_ready, format_address
from tests.support.processes import Spawner


def test_one_json_line_with_component_and_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    announce_ready("ztunnel", {"admin": "127.0.0.1:15000", "hbone": "127.0.1.5:15008"}, node="node-a")
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {
        "event": "ready",
        "component": "ztunnel",
        "addresses": {"admin": "127.0.0.1:15000", "hbone": "127.0.1.5:15008"},
        "node": "node-a",
    }


def test_explicit_stream_and_return_value() -> None:
    stream = io.StringIO()
    line = announce_ready("waypoint", {"metrics": "127.0.0.1:15020"}, stream=stream)
    assert json.loads(stream.getvalue()) == line


def test_reserved_extra_fields_are_refused() -> None:
    with pytest.raises(InvalidReadyAnnouncement, match="collide"):
        announce_ready("x", {}, stream=io.StringIO(), event="other")


def test_addresses_must_be_host_port_strings() -> None:
    with pytest.raises(InvalidReadyAnnouncement, match="host:port"):
        announce_ready("x", {"admin": 15000}, stream=io.StringIO())  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [("127.0.0.1", 15000, "127.0.0.1:15000"), ("::1", 15000, "[::1]:15000"), ("[::1]", 1, "[::1]:1")],
)
def test_format_address(host: str, port: int, text: str) -> None:
    assert format_address(host, port) == text


def test_the_process_harness_reads_the_line(spawn: Spawner) -> None:
    code = textwrap.dedent(
        """
        import sys
        import time
        from meshcore.ready import announce_ready
        print("log noise goes to stderr", file=sys.stderr)
        announce_ready("probe", {"admin": "127.0.0.1:1"}, pid=1)
        time.sleep(60)  # stays up until the harness stops it
        """
    )
    repo_root = str(Path(__file__).resolve().parents[3])
    component = spawn.start("probe", [sys.executable, "-c", code], env={"PYTHONPATH": repo_root})
    assert component.addresses == {"admin": "127.0.0.1:1"}
    assert component.ready["component"] == "probe"
