"""The metrics listener: ``GET /metrics`` on a port every worker shares (``SO_REUSEPORT``).

In-process tests use this process's default registry; the multiprocess test runs in a fresh
interpreter with ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus-client reads it at import).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.observability.metrics_listener import start_metrics_listener
from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
    reason="in-process tests expect prometheus-client in single-process mode",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def ports_of(server: asyncio.AbstractServer) -> set[int]:
    return {int(s.getsockname()[1]) for s in server.sockets}  # type: ignore[attr-defined]


def settings_on(port: int) -> Settings:
    return dataclasses.replace(Settings(), metrics_host="127.0.0.1", metrics_port=port)


async def test_scrape_shows_metrics_and_other_paths_are_404() -> None:
    metrics.REQUESTS.labels("http", "query", "ok").inc()
    server = await start_metrics_listener(settings_on(free_port()))
    assert server is not None
    [port] = ports_of(server)
    try:
        status, content_type, body = await asyncio.to_thread(get, port, "/metrics")
        assert status == 200
        assert content_type == CONTENT_TYPE_LATEST
        text = body.decode()
        assert 'graphql_requests_total{operation_type="query",status="ok",transport="http"}' in text
        status, _, _ = await asyncio.to_thread(get, port, "/")
        assert status == 404
        status, _, _ = await asyncio.to_thread(get, port, "/metrics/extra")
        assert status == 404
        status, _, _ = await asyncio.to_thread(get, port, "/metrics", "POST")
        assert status == 405
    finally:
        server.close()
        await server.wait_closed()


async def test_two_listeners_share_one_port() -> None:
    settings = settings_on(free_port())
    first = await start_metrics_listener(settings)
    second = await start_metrics_listener(settings)
    assert first is not None and second is not None
    try:
        assert ports_of(first) | ports_of(second) == {settings.metrics_port}
        for _ in range(4):
            status, _, body = await asyncio.to_thread(get, settings.metrics_port, "/metrics")
            assert status == 200 and b"graphql_requests_total" in body
        first.close()
        await first.wait_closed()
        # The port keeps answering while any worker still listens.
        status, _, _ = await asyncio.to_thread(get, settings.metrics_port, "/metrics")
        assert status == 200
    finally:
        for server in (first, second):
            server.close()
            await server.wait_closed()


async def test_disabled_or_unbindable_port_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    assert await start_metrics_listener(settings_on(0)) is None
    with socket.socket() as taken:  # listening without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert await start_metrics_listener(settings_on(port)) is None
    assert "could not bind" in caplog.text


OTHER_WORKER = """
import os
from service import metrics
from service.observability.metrics_listener import set_worker_alive
metrics.REQUESTS.labels("http", "query", "ok").inc(2)
set_worker_alive()
print(os.getpid())
"""

MULTIPROCESS_SCRIPT = """
import asyncio, http.client, json, subprocess, sys
from prometheus_client import multiprocess
from service import metrics
from service.observability.metrics_listener import set_worker_alive, start_metrics_listener
from service.settings import Settings

REQUESTS = 'graphql_requests_total{operation_type="query",status="ok",transport="http"}'


def scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Connection": "close"})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def value(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def main(port, other_worker):
    metrics.REQUESTS.labels("http", "query", "ok").inc()
    set_worker_alive()
    other = subprocess.run(
        [sys.executable, "-c", other_worker], capture_output=True, text=True, timeout=30, check=True
    )
    server = await start_metrics_listener(Settings(metrics_host="127.0.0.1", metrics_port=port))
    assert server is not None
    try:
        before = await asyncio.to_thread(scrape, port)
        multiprocess.mark_process_dead(int(other.stdout))
        after = await asyncio.to_thread(scrape, port)
    finally:
        server.close()
        await server.wait_closed()
    print(json.dumps({
        "requests_before": value(before, REQUESTS),
        "alive_before": value(before, "graphql_workers_alive"),
        "requests_after": value(after, REQUESTS),
        "alive_after": value(after, "graphql_workers_alive"),
    }))


asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def test_multiprocess_scrape_sums_workers_and_drops_dead_live_gauges(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT, str(free_port()), OTHER_WORKER],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "requests_before": 3.0,  # 1 in this process + 2 in the other
        "alive_before": 2.0,
        "requests_after": 3.0,  # counters outlive their process
        "alive_after": 1.0,  # the dead worker's livesum gauge is gone
    }
