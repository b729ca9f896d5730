"""Metrics and logs under real traffic: 2 gunicorn workers behind nginx, Redis fanout."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from support.stack import Stack, poll, request, running_stack

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(workers=2, app="support.schemas:schema") as s:
        yield s


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, sorted labels): value}`` from the supervisor's metrics endpoint."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.metrics_port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode()
        assert resp.status == 200
    finally:
        conn.close()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


#: A scraped sample's key: (sample name, sorted labels).
Sample = tuple[str, tuple[tuple[str, str], ...]]


def sample(name: str, **labels: str) -> Sample:
    return name, tuple(sorted(labels.items()))


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get(sample(name, **labels), 0.0)


def test_counters_match_traffic_across_workers(stack: Stack) -> None:
    before = scrape(stack)
    conn = stack.http()
    n_ok, n_bad = 40, 7
    pids = set()
    for _ in range(n_ok):
        status, _, body = request(conn, "POST", "/graphql", {"query": "query Hello { hello }"})
        assert status == 200
    for _ in range(n_bad):
        status, _, _ = request(conn, "POST", "/graphql", {"query": "{ nope }"})
        assert status == 200  # application/json: validation errors are 200
    for _ in range(10):
        _, _, body = request(conn, "GET", "/healthz")
        pids.add(json.loads(body)["pid"])
    conn.close()
    assert len(pids) == 2  # traffic reached both workers

    async def subscribe_and_receive() -> int:
        url = f"ws://127.0.0.1:{stack.port}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            json.loads(await asyncio.wait_for(ws.recv(), 10))
            query = 'subscription { ticker(group: "metrics") { value } }'
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
            poll(
                lambda: value(scrape(stack), "graphql_active_subscriptions") >= 1,
                10,
                "the subscription to be active",
            )
            for i in range(5):
                conn2 = stack.slot(i % 2)
                status, _, _ = request(
                    conn2,
                    "POST",
                    "/graphql",
                    {"query": f'mutation {{ tick(value: {i}, group: "metrics") }}'},
                )
                conn2.close()
                assert status == 200
            got = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(5)]
            return len(got)

    assert asyncio.run(subscribe_and_receive()) == 5

    # What this traffic must add: sample -> at least this much.
    expected: dict[Sample, float] = {
        sample("graphql_requests_total", transport="http", operation_type="query", status="ok"): (
            n_ok
        ),
        sample(
            "graphql_requests_total", transport="http", operation_type="unknown", status="rejected"
        ): n_bad,
        sample(
            "graphql_requests_total", transport="http", operation_type="mutation", status="ok"
        ): 5,
        sample("graphql_errors_total", code="GRAPHQL_VALIDATION_FAILED"): n_bad,
        sample("graphql_subscription_notifications_sent_total"): 5,
        sample("graphql_fanout_lag_seconds_count"): 5,
    }

    def delta(samples: dict[Sample, float], key: Sample) -> float:
        return samples.get(key, 0.0) - before.get(key, 0.0)

    # Workers hand their counts to prometheus-client once a second, one mmapped file write per
    # metric, and a scrape may fall in the middle of a worker's flush: wait until every count
    # this traffic adds is there (each document lookup counted as a hit or a miss), then check
    # none is more than expected.
    hits = sample("graphql_document_cache_hits_total")
    misses = sample("graphql_document_cache_misses_total")

    def settled() -> Any:
        s = scrape(stack)
        lookups = delta(s, hits) + delta(s, misses)
        counted = all(delta(s, key) >= least for key, least in expected.items())
        return s if counted and lookups >= n_ok + n_bad else None

    after = poll(settled, 10, "every worker's counts")
    assert {key: delta(after, key) for key in expected} == expected
    assert value(after, "graphql_workers_alive") == 2
    assert value(after, "graphql_db_pool_size") >= 0


def test_killed_workers_live_gauges_disappear(stack: Stack) -> None:
    poll(lambda: value(scrape(stack), "graphql_workers_alive") == 2, 10, "two live workers")
    before = stack.slot_pids()
    os.kill(before[1], signal.SIGKILL)
    # Between the death and the respawn the dead pid's gauge is gone (mark_process_dead), and
    # once the replacement is up the sum is 2 again, never 3.
    poll(
        lambda: (p := stack.slot_pids()).get(1) not in (None, before[1]) and len(p) == 2,
        30,
        "the replacement worker",
    )
    poll(lambda: value(scrape(stack), "graphql_workers_alive") == 2, 10, "two live workers again")
    files = os.listdir(stack.metrics_dir)
    assert not any(f"_{before[1]}.db" in name and name.startswith("gauge_live") for name in files)


def test_log_lines_are_json_and_carry_nginx_request_id(stack: Stack) -> None:
    conn = stack.http()
    status, headers, _ = request(
        conn,
        "POST",
        "/graphql",
        {"query": "query Named { hello }"},
        {"X-Request-ID": "trace-abc-123"},
    )
    assert status == 200 and headers["x-request-id"] == "trace-abc-123"
    status, headers, _ = request(conn, "POST", "/graphql", {"query": "{ hello }"})
    generated = headers["x-request-id"]
    conn.close()

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stack.log().splitlines() if line.strip()]

    def request_line(request_id: str) -> dict[str, Any] | None:
        for entry in lines():
            if entry.get("event") == "request" and entry.get("request_id") == request_id:
                return entry
        return None

    entry = poll(lambda: request_line("trace-abc-123"), 10, "the request log line")
    assert entry["operation_name"] == "Named" and entry["operation_type"] == "query"
    assert entry["status"] == 200 and entry["path"] == "/graphql" and entry["method"] == "POST"
    assert isinstance(entry["duration_ms"], float) and entry["slot"] in (0, 1)
    assert entry["pid"] in stack.slot_pids().values()
    assert poll(lambda: request_line(generated), 10, "the generated request id's line")
    # Every line the stack wrote (arbiter, workers, gunicorn) parses as JSON.
    raw = [line for line in stack.log().splitlines() if line.strip()]
    assert raw and all(isinstance(json.loads(line), dict) for line in raw)


def test_masked_internal_error_shows_the_request_id_that_the_logs_carry(stack: Stack) -> None:
    conn = stack.http()
    status, _, body = request(
        conn, "POST", "/graphql", {"query": "{ boom }"}, {"X-Request-ID": "boom-77"}
    )
    conn.close()
    assert status == 200
    error = json.loads(body)["errors"][0]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "boom-77"}
    assert "secret internal detail" not in body.decode()

    def exception_line() -> dict[str, Any] | None:
        for line in stack.log().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("request_id") == "boom-77" and entry.get("exception"):
                return entry
        return None

    entry = poll(exception_line, 10, "the logged exception with the request id")
    assert "secret internal detail" in json.dumps(entry["exception"])
