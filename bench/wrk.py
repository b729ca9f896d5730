"""Drive wrk: write its Lua request script, run it, parse its report.

``run_wrk`` runs ``wrk --latency`` and returns requests per second plus the 50% and 99% lines of
its Latency Distribution. Responses other than 2xx/3xx and socket errors are counted too, so a
benchmark of error pages is caught instead of reported as fast.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*([0-9.]+)(us|ms|s|m|h)\s*$")
_REQUESTS_PER_S = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s+(\d+) requests in ", re.MULTILINE)
_NON_2XX = re.compile(r"^\s+Non-2xx or 3xx responses:\s+(\d+)", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)


class WrkError(RuntimeError):
    """wrk failed or printed something we cannot read."""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int

    @property
    def clean(self) -> bool:
        """Every response was 2xx/3xx and no socket error happened."""
        return self.non_2xx == 0 and self.socket_errors == 0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkError("wrk is not installed (make system-deps installs it with apt)")
    return path


def duration_ms(text: str) -> float:
    """``"1.23ms"`` -> 1.23; wrk prints us, ms, s, m or h."""
    match = _DURATION.match(text)
    if match is None:
        raise WrkError(f"unreadable wrk duration {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


def parse(output: str) -> WrkResult:
    """Read the report of ``wrk --latency``."""
    rate = _REQUESTS_PER_S.search(output)
    total = _TOTAL.search(output)
    percentiles = {m.group(1): duration_ms(m.group(2)) for m in _PERCENTILE.finditer(output)}
    if rate is None or total is None or set(percentiles) != {"50", "99"}:
        raise WrkError(f"unreadable wrk report (was --latency given?):\n{output}")
    non_2xx = _NON_2XX.search(output)
    errors = _SOCKET_ERRORS.search(output)
    return WrkResult(
        requests_per_s=float(rate.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=int(total.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def _lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal (no escapes to get wrong)."""
    level = 0
    while f"]{'=' * level}]" in text + "]":  # also when text ends with "]" + "=" * level
        level += 1
    eq = "=" * level
    # Lua drops a newline right after the opening bracket: give it one to drop.
    first = "\n" if text.startswith(("\n", "\r")) else ""
    return f"[{eq}[{first}{text}]{eq}]"


def request_script(method: str, body: str | None, headers: Mapping[str, str]) -> str:
    """The Lua that makes every wrk request ``method`` with ``body`` and ``headers``."""
    lines = [f"wrk.method = {_lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {_lua_string(body)}")
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    return "\n".join(lines) + "\n"


def run_wrk(
    url: str,
    *,
    duration_s: float,
    threads: int,
    connections: int,
    method: str = "GET",
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> WrkResult:
    """Run wrk against ``url`` for ``duration_s`` seconds and parse its report."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(request_script(method, body, headers or {}))
        script.flush()
        command = [
            wrk_path(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration_s))}s",
            f"--timeout={max(1, round(timeout_s))}s",
            "--latency",
            "-s",
            script.name,
            url,
        ]
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration_s + timeout_s + 30,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    if done.returncode != 0 or done.stderr.strip():
        # wrk reports a broken script on stderr and then runs plain GETs: never trust that.
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr or done.stdout}")
    return parse(done.stdout)
