"""Drive ``wrk`` (Debian's package) and parse what it prints.

wrk is used for every HTTP/1.1 workload so all paths are measured by the same C client: closed-loop
requests/s (N connections, no pause), latency at a fixed offered rate (each connection pauses between
requests through wrk's ``delay()`` hook so that N connections together offer R requests/s — pacing by
think time, not a true open loop: a stall delays the following requests instead of queueing them), and
new connections per second (``Connection: close`` on every request).

Through a ztunnel the client speaks to the pod's explicit proxy, so the script writes absolute-form
request lines (``GET http://ip:port/ HTTP/1.1``); the proxy forwards the first one and then the
connection is a tunnel, and nginx accepts the absolute form for the following requests (RFC 9112 §3.2.2).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import attrs

WRK = "wrk"


@attrs.frozen
class WrkResult:
    requests: int
    seconds: float
    errors: int
    non_2xx: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def lua_script(*, url_in_request_line: str, host: str, close: bool, delay_ms: float | None) -> str:
    lines = [
        'wrk.method = "GET"',
        f'wrk.path = "{url_in_request_line}"',
        f'wrk.headers["Host"] = "{host}"',
    ]
    if close:
        lines.append('wrk.headers["Connection"] = "close"')
    if delay_ms is not None:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    return "\n".join(lines) + "\n"


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse(output: str) -> WrkResult:
    """The figures of one ``wrk --latency`` run."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    if done is None:
        raise ValueError(f"wrk printed no summary:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)$", output, re.M))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_duration_ms(done.group(2) + done.group(3)) / 1000,
        errors=errors,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        p50_ms=_duration_ms(percentiles["50"]) if "50" in percentiles else None,
        p99_ms=_duration_ms(percentiles["99"]) if "99" in percentiles else None,
    )


def run(
    *, connect: str, url: str, host: str, connections: int, seconds: float, through_proxy: bool,
    close: bool = False, rate: float | None = None, timeout_s: float = 10.0,
) -> WrkResult:
    """One bounded wrk run against ``connect`` (``http://ip:port``), requesting ``url``.

    ``rate``: offered requests/s for all connections together (paced); None = closed loop.
    """
    path = url if through_proxy else "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    delay = None if rate is None else 1000.0 * connections / rate
    script = lua_script(url_in_request_line=path, host=host, close=close, delay_ms=delay)
    with tempfile.TemporaryDirectory() as scratch:
        script_path = Path(scratch) / "bench.lua"
        script_path.write_text(script)
        argv = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={timeout_s:g}s",
                "--latency", "-s", str(script_path), connect + "/"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse(done.stdout)
