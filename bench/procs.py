"""Server processes the benchmark starts, and the HTTP calls it makes to them.

``Child`` starts ``python -m <module> <args>`` in its own session with its output in a log file,
waits (polling with a deadline, never sleeping blindly) until it answers, and on ``stop()``
sends SIGTERM, then SIGKILL to its process group if it does not exit in time, and reaps it.

CPU time comes from ``/proc/<pid>/stat`` (utime + stime, in clock ticks: ``TICK_US``
microseconds each, 10 ms on Linux). ``tree_ticks`` reads whole process trees (a server and
every process under it) in one pass over ``/proc``; ``CpuUse`` is what a tree used over one
measured run, per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

GRAPHQL_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class ChildExited(RuntimeError):
    """The server process ended while we waited for it."""


class Child:
    """A benchmark server process; use as a context manager."""

    def __init__(self, module: str, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.command = [sys.executable, "-m", module, *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Child:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """The server process's pid (the root of its process tree); it must be started."""
        if self.proc is None:
            raise RuntimeError(f"{' '.join(self.command)} is not started")
        return self.proc.pid

    def wait_ready(self, check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
        """Poll ``check`` until it returns True; fail at once if the process exits."""
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ChildExited(f"{' '.join(self.command)} is not running:\n{self.log()}")
            try:
                if check():
                    return
            except Exception as exc:  # not up yet; report the last failure on timeout
                last_error = exc
            time.sleep(0.02)
        raise TimeoutError(
            f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error!r})"
            f"\n{self.log()}"
        )

    def wait_http(self, port: int, path: str, timeout_s: float = 20.0) -> None:
        """Wait until ``GET path`` on 127.0.0.1:``port`` answers 200."""
        self.wait_ready(
            lambda: http_call(port, "GET", path)[0] == 200,
            f"{' '.join(self.command[2:])} to answer GET {path} on :{port}",
            timeout_s,
        )

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            # Anything it forked and left behind in its session.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, timeout_s: float = 5.0
) -> tuple[int, bytes]:
    """One request on a fresh connection to 127.0.0.1:``port``; returns status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=GRAPHQL_HEADERS if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def graphql(port: int, query: str, path: str = "/graphql") -> dict[str, Any]:
    """POST ``query``; return the response's ``data``, raising on a non-200 or any error."""
    status, body = http_call(port, "POST", path, json.dumps({"query": query}).encode())
    result = json.loads(body) if body else {}
    if status != 200 or result.get("errors") or "data" not in result:
        raise RuntimeError(f"{query!r} on :{port} answered {status}: {body[:500]!r}")
    data: dict[str, Any] = result["data"]
    return data


def cpu_ticks(pid: int) -> int:
    """utime + stime of process ``pid`` in clock ticks (``/proc/<pid>/stat``); 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def children_cpu_ticks(pids: list[int]) -> int:
    """CPU ticks of ``pids`` together."""
    return sum(cpu_ticks(pid) for pid in pids)


TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


COARSE_TICKS = 100
"""A run of fewer ticks than this gives a coarse figure: two readings of ``/proc`` are off by up
to a tick per process, and one tick is then over 1% of the run."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Proc:
    ppid: int
    own: int  # utime + stime
    reaped: int  # cutime + cstime: the children it has waited for


def _proc_table() -> dict[int, _Proc]:
    """Every process's parent and CPU ticks, from one pass over ``/proc``."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone since listdir
            continue
        table[int(entry)] = _Proc(
            ppid=int(fields[1]),
            own=int(fields[11]) + int(fields[12]),
            reaped=int(fields[13]) + int(fields[14]),
        )
    return table


@dataclasses.dataclass(frozen=True, slots=True)
class TreeTicks:
    """CPU ticks of process trees at one moment.

    ``ticks`` is utime + stime of every live process in the trees plus cutime + cstime (what the
    children they reaped used), so a worker that exits and is reaped by its supervisor between
    two readings still counts, through its supervisor, instead of vanishing.
    """

    ticks: int
    processes: int
    roots_alive: bool  # False: a root process is gone, its ticks with it


def tree_ticks(groups: Mapping[str, Iterable[int]]) -> dict[str, TreeTicks]:
    """``TreeTicks`` of each named group of root pids (each root and all its descendants)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    out = {}
    for name, group in groups.items():
        roots = list(group)
        seen: set[int] = set()
        todo = [pid for pid in roots if pid in table]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, ()))
        out[name] = TreeTicks(
            ticks=sum(table[pid].own + table[pid].reaped for pid in seen),
            processes=len(seen),
            roots_alive=all(pid in table for pid in roots),
        )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class CpuUse:
    """The CPU ticks process trees used over one measured run, and the requests it counted."""

    ticks: int
    processes: int  # in the trees at the end of the run
    requests: int
    lost: str = ""  # why the ticks cannot be trusted, if they cannot

    @classmethod
    def between(cls, before: TreeTicks, after: TreeTicks, requests: int) -> CpuUse:
        lost = ""
        if not (before.roots_alive and after.roots_alive):
            lost = "a server process exited during the run"
        return cls(after.ticks - before.ticks, after.processes, requests, lost)

    @property
    def us_per_request(self) -> float | None:
        """CPU microseconds per request; None when there is no meaningful figure (``missing``)."""
        if self.missing:
            return None
        return self.ticks * TICK_US / self.requests

    @property
    def missing(self) -> str:
        """Why there is no figure, or ``""`` when there is one."""
        if self.lost:
            return self.lost
        if self.requests <= 0:
            return "wrk counted no requests"
        if self.processes == 0:
            return "no server process found"
        if self.ticks <= 0:
            return f"under one /proc tick ({TICK_US / 1000:g} ms) in {self.requests} requests"
        return ""

    @property
    def coarse(self) -> bool:
        return self.ticks < COARSE_TICKS

    @property
    def step_us(self) -> float | None:
        """How far one tick moves the per-request figure: its resolution."""
        return TICK_US / self.requests if self.requests > 0 else None
