"""The multi-worker bundle: real gunicorn, real nginx, real Postgres."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import signal
import threading
from collections.abc import Iterator

import pytest

from support.stack import Stack, poll, request, running_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(workers=2, app="support.schemas:schema") as s:
        yield s


class RequestLoop(threading.Thread):
    """Sends ``{ hello }`` through nginx over keep-alive until stopped (at most ``limit``)."""

    def __init__(self, stack: Stack, limit: int = 20000) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.limit = limit
        self.stop_event = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        conn = self.stack.http(timeout=10)
        body = {"query": "{ hello }"}
        for _ in range(self.limit):
            if self.stop_event.is_set():
                break
            try:
                status, _, data = request(conn, "POST", "/graphql", body)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = self.stack.http(timeout=10)
                continue
            if status == 200 and json.loads(data) == {"data": {"hello": "Hello, world!"}}:
                self.ok += 1
            else:
                self.failures.append(f"{status} {data[:200]!r}")
        conn.close()

    def finish(self, more: int = 200) -> None:
        target = self.ok + more
        poll(lambda: self.ok >= target or not self.is_alive(), 30, f"{more} more requests")
        self.stop_event.set()
        self.join(30)


def test_both_workers_answer_through_nginx(stack: Stack) -> None:
    conn = stack.http()
    pids = set()
    for _ in range(20):
        status, _, body = request(conn, "GET", "/healthz")
        assert status == 200
        pids.add(json.loads(body)["pid"])
    conn.close()
    assert pids == set(stack.slot_pids().values())
    assert len(pids) == 2
    assert stack.graphql("{ hello }") == {"data": {"hello": "Hello, world!"}}


def test_large_response_is_gzipped_small_one_is_not(stack: Stack) -> None:
    conn = stack.http()
    status, headers, body = request(
        conn, "POST", "/graphql", {"query": "{ item { blob } }"}, {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(body))["data"]["item"]["blob"] == "x" * 2000
    status, headers, body = request(
        conn, "POST", "/graphql", {"query": "{ hello }"}, {"Accept-Encoding": "gzip"}
    )
    assert status == 200 and "content-encoding" not in headers
    conn.close()


def test_metrics_and_unknown_paths_are_not_public(stack: Stack) -> None:
    conn = stack.http()
    status, _, _ = request(conn, "GET", "/metrics")
    assert status == 404
    conn.close()


def test_request_id_reaches_the_worker(stack: Stack) -> None:
    conn = stack.http()
    status, headers, _ = request(
        conn, "POST", "/graphql", {"query": "{ hello }"}, {"X-Request-ID": "rid-123"}
    )
    assert status == 200 and headers.get("x-request-id") == "rid-123"
    conn.close()


def test_kill_9_loses_no_request_and_replacement_takes_the_slot(stack: Stack) -> None:
    before = stack.slot_pids()
    path = stack.settings.slot_path(0)
    loop = RequestLoop(stack)
    loop.start()
    poll(lambda: loop.ok >= 100, 30, "the request loop to warm up")
    os.kill(before[0], signal.SIGKILL)
    after = poll(
        lambda: (p := stack.slot_pids()).get(0) not in (None, before[0]) and len(p) == 2 and p,
        30,
        "a replacement worker in slot 0",
    )
    loop.finish()
    assert loop.failures == []
    assert after[1] == before[1]  # the other slot was untouched
    assert os.path.exists(path) and stack.health_of(0)["slot"] == 0
    assert stack.worker_pids() == set(after.values())


def test_hup_reload_loses_no_request_and_replaces_every_worker(stack: Stack) -> None:
    before = stack.slot_pids()
    assert stack.proc is not None
    loop = RequestLoop(stack)
    loop.start()
    poll(lambda: loop.ok >= 100, 30, "the request loop to warm up")
    stack.proc.send_signal(signal.SIGHUP)
    after = poll(
        lambda: (
            len(p := stack.slot_pids()) == 2
            and not set(p.values()) & set(before.values())
            and stack.worker_pids() == set(p.values())
            and p
        ),
        45,
        "new workers in both slots and the old ones gone",
    )
    loop.finish()
    assert loop.failures == []
    assert sorted(after) == [0, 1]


def test_two_workers_never_share_a_slot(stack: Stack) -> None:
    for _ in range(3):
        before = stack.slot_pids()
        os.kill(before[1], signal.SIGKILL)

        def refilled(b: dict[int, int] = before) -> bool:
            pids = stack.slot_pids()
            return pids.get(1) not in (None, b[1]) and len(pids) == 2

        poll(
            refilled,
            30,
            "slot 1 to be refilled",
        )
    pids = stack.slot_pids()
    assert sorted(pids) == [0, 1]
    assert len(set(pids.values())) == 2
    poll(lambda: stack.worker_pids() == set(pids.values()), 10, "exactly one process per slot")


def test_readyz_reports_postgres(stack: Stack) -> None:
    conn = stack.http()
    status, _, body = request(conn, "GET", "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    conn.close()


def test_term_drains_an_inflight_slow_request() -> None:
    with running_stack(workers=1, app="support.schemas:schema", env={"REDIS_URL": ""}) as stack:
        result: dict[str, object] = {}

        def slow() -> None:
            conn = stack.http(timeout=30)
            try:
                result["response"] = request(
                    conn, "POST", "/graphql", {"query": "{ slow(seconds: 1.5) }"}
                )
            except Exception as exc:
                result["error"] = exc
            finally:
                conn.close()

        thread = threading.Thread(target=slow)
        thread.start()
        # Wait until the worker has the request in flight, then stop the supervisor.
        poll(
            lambda: _inflight(stack) >= 1,
            10,
            "the slow request to be in flight",
        )
        assert stack.proc is not None
        stack.proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert "error" not in result, result
        response = result["response"]
        assert isinstance(response, tuple)
        status, _, body = response
        assert status == 200
        assert json.loads(body) == {"data": {"slow": "slept 1.5"}}
        assert stack.proc.wait(30) == 0
        assert not os.path.exists(stack.settings.slot_path(0))


def _inflight(stack: Stack) -> int:
    """In-flight operations, from the workers' multiprocess metrics files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=stack.metrics_dir)
    value = registry.get_sample_value("graphql_inflight_operations")
    return int(value or 0)


def test_workers_exit_when_the_arbiter_dies() -> None:
    with running_stack(workers=2, app="support.schemas:schema") as stack:
        assert stack.proc is not None
        workers = set(stack.slot_pids().values())
        assert len(workers) == 2
        os.kill(stack.proc.pid, signal.SIGKILL)
        stack.proc.wait(10)

        def gone() -> bool:
            for pid in workers:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except FileNotFoundError:
                    continue
                if state != "Z":
                    return False
            return True

        # Each worker notices its parent changed within a heartbeat interval and exits.
        poll(gone, 20, "orphaned workers to exit")
