"""Signals meant for the arbiter, delivered to a worker: real gunicorn, real nginx.

The fork copies the arbiter's Python signal handlers into every worker. The worker resets all
of them and turns HUP, USR1, TTIN, TTOU and WINCH into a logged no-op: a stray signal neither
stops, kills nor restarts a worker, and the arbiter keeps its worker count.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from support.polling import poll_until
from support.stack import Stack, request, running_stack

pytestmark = pytest.mark.timeout(120)

STRAY = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH, signal.SIGUSR1)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(workers=2, app="support.schemas:schema") as s:
        yield s


def log_entries(stack: Stack, offset: int = 0) -> list[dict[str, Any]]:
    """JSON log lines after character ``offset``; a line that is not JSON (a raw traceback)
    fails. A last line still being written is left for the next call."""
    complete = stack.log()[offset:].split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


def ignored_by(stack: Stack, pid: int, offset: int) -> list[str]:
    """Signal names the worker ``pid`` logged as ignored since ``offset``."""
    return [
        entry["signal"]
        for entry in log_entries(stack, offset)
        if entry.get("pid") == pid and entry.get("logger") == "service.supervisor.worker"
    ]


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def assert_all_workers_serve(stack: Stack, pids: set[int]) -> None:
    """Requests through nginx reach exactly ``pids`` and every one succeeds."""
    conn = stack.http()
    seen = set()
    try:
        for _ in range(20):
            status, _, body = request(conn, "GET", "/healthz")
            assert status == 200
            seen.add(json.loads(body)["pid"])
        assert stack.graphql("{ hello }") == {"data": {"hello": "Hello, world!"}}
    finally:
        conn.close()
    assert seen == pids


def assert_quiet(stack: Stack, offset: int) -> None:
    """Since ``offset``: no traceback, no error, and the arbiter forked or reaped nobody."""
    for entry in log_entries(stack, offset):
        assert "exception" not in entry, entry
        assert entry.get("level") not in ("error", "critical"), entry
        event = str(entry.get("event", ""))
        assert not event.startswith("Booting worker"), entry
        assert "exited" not in event, entry


def test_stray_signals_to_a_worker_are_ignored(stack: Stack) -> None:
    assert stack.proc is not None
    before = stack.slot_pids()
    assert len(before) == 2
    target = before[0]
    offset = len(stack.log())
    for sig in STRAY:
        os.kill(target, sig)
    expected = sorted(sig.name for sig in STRAY)
    poll_until(
        lambda: sorted(ignored_by(stack, target, offset)) == expected,
        timeout_s=10,
        what=f"worker {target} to log that it ignored {', '.join(expected)}",
    )
    assert state_of(target) in ("S", "R")  # not stopped (T) by TTIN/TTOU
    assert stack.slot_pids() == before
    assert stack.worker_pids() == set(before.values())
    assert_all_workers_serve(stack, set(before.values()))
    assert_quiet(stack, offset)


def test_usr1_to_the_arbiter_reaches_every_worker_harmlessly(stack: Stack) -> None:
    """USR1 is the arbiter's "reopen log files", which it forwards to each worker."""
    assert stack.proc is not None
    before = stack.slot_pids()
    offset = len(stack.log())
    stack.proc.send_signal(signal.SIGUSR1)
    poll_until(
        lambda: all(ignored_by(stack, pid, offset) == ["SIGUSR1"] for pid in before.values()),
        timeout_s=10,
        what="every worker to log that it ignored SIGUSR1",
    )
    assert stack.slot_pids() == before
    assert stack.worker_pids() == set(before.values())
    assert_all_workers_serve(stack, set(before.values()))
    assert_quiet(stack, offset)
