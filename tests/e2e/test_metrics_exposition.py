"""The metrics endpoint: prometheus-client's HTTP server, run once by the arbiter.

Against a real supervisor (gunicorn, 2 workers, nginx): one scrape answers for every worker,
only the arbiter holds the metrics port (workers close their inherited copy after the fork),
and the port keeps answering while a killed worker is replaced; the arbiter stops the endpoint
when it exits. A port that cannot be bound leaves the service running without metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.observability.exposition import start_metrics_server, stop_metrics_server
from service.settings import Settings
from support.polling import poll_until
from support.stack import Stack, children_of, free_port, request, running_stack

pytestmark = pytest.mark.timeout(120)

HTTP_QUERY_OK = {"transport": "http", "operation_type": "query", "status": "ok"}
LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
TEXT_FORMAT = "text/plain; version=0.0.4"  # what prometheus-client answers without ``Accept``


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(workers=2, app="support.schemas:schema") as s:
        yield s


def get_metrics(port: int) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read().decode()
    finally:
        conn.close()


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, text = get_metrics(stack.metrics_port)
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def log_entries(stack: Stack) -> list[dict[str, Any]]:
    """The stack's JSON log lines, but a last line still being written."""
    return [json.loads(line) for line in stack.log().split("\n")[:-1] if line.strip()]


def listening_inodes(pid: int, port: int) -> set[str]:
    """Socket inodes listening on TCP ``port`` in ``pid``'s network namespace."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)  # header
            for line in f:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets among ``pid``'s open file descriptors."""
    out = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:[") : -1])
    return out


def holders_of_metrics_port(stack: Stack) -> set[int]:
    """The arbiter and/or workers holding a socket that listens on the metrics port."""
    assert stack.proc is not None
    arbiter = stack.proc.pid
    listening = listening_inodes(arbiter, stack.metrics_port)
    assert listening, f"nothing listens on {stack.metrics_port}"
    return {pid for pid in {arbiter, *children_of(arbiter)} if socket_inodes(pid) & listening}


def test_one_scrape_answers_for_every_worker(stack: Stack) -> None:
    status, content_type, _ = get_metrics(stack.metrics_port)
    assert status == 200 and content_type.startswith(TEXT_FORMAT)
    poll_until(
        lambda: value(scrape(stack), "graphql_workers_alive") == 2,
        timeout_s=10,
        what="two live workers",
    )
    before = value(scrape(stack), "graphql_requests_total", **HTTP_QUERY_OK)

    conn = stack.http()
    pids = set()
    for _ in range(10):
        status, _, body = request(conn, "POST", "/graphql", {"query": "{ hello }"})
        assert status == 200 and json.loads(body) == {"data": {"hello": "Hello, world!"}}
    for _ in range(10):
        _, _, body = request(conn, "GET", "/healthz")
        pids.add(json.loads(body)["pid"])
    conn.close()
    assert len(pids) == 2  # the traffic reached both workers

    poll_until(
        lambda: value(scrape(stack), "graphql_requests_total", **HTTP_QUERY_OK) == before + 10,
        timeout_s=10,
        what="ten more http queries counted",
    )
    # The arbiter records nothing itself: only worker pids wrote multiprocess files.
    assert stack.proc is not None
    writers = {
        int(name.rsplit("_", 1)[1].removesuffix(".db")) for name in os.listdir(stack.metrics_dir)
    }
    assert stack.proc.pid not in writers


def test_only_the_arbiter_holds_the_metrics_port(stack: Stack) -> None:
    assert stack.proc is not None
    workers = set(stack.slot_pids().values())
    assert len(workers) == 2 and workers <= children_of(stack.proc.pid)
    assert holders_of_metrics_port(stack) == {stack.proc.pid}


def test_port_keeps_answering_while_a_killed_worker_is_replaced(stack: Stack) -> None:
    assert stack.proc is not None
    before = stack.slot_pids()
    os.kill(before[1], signal.SIGKILL)
    scrapes: list[int | str] = []  # every scrape between the kill and the replacement

    def replaced() -> bool:
        try:
            scrapes.append(get_metrics(stack.metrics_port)[0])
        except (OSError, http.client.HTTPException) as exc:
            scrapes.append(repr(exc))
        pids = stack.slot_pids()
        return pids.get(1) not in (None, before[1]) and len(pids) == 2

    poll_until(replaced, timeout_s=30, what="a replacement worker in slot 1")
    assert scrapes and set(scrapes) == {200}, scrapes
    poll_until(
        lambda: value(scrape(stack), "graphql_workers_alive") == 2,
        timeout_s=10,
        what="two live workers again",
    )
    # The replacement was forked from the serving arbiter and closed its copy of the socket too.
    assert holders_of_metrics_port(stack) == {stack.proc.pid}


def test_an_unbindable_metrics_port_does_not_stop_the_service() -> None:
    with socket.socket() as taken:  # listening without SO_REUSEPORT: nobody may share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running_stack(
            workers=1, app="support.schemas:schema", env={"METRICS_PORT": str(port)}
        ) as stack:
            assert stack.graphql("{ hello }") == {"data": {"hello": "Hello, world!"}}

            def warning() -> dict[str, Any] | None:
                for entry in log_entries(stack):
                    if entry.get("level") == "warning" and str(port) in entry.get("event", ""):
                        return entry
                return None

            entry = poll_until(warning, timeout_s=10, what="the warning about the metrics port")
            assert entry is not None and stack.proc is not None
            assert entry["pid"] == stack.proc.pid
            assert entry["logger"] == "service.metrics"


def test_the_arbiter_stops_the_endpoint_when_it_exits() -> None:
    with running_stack(workers=1, app="support.schemas:schema") as stack:
        assert stack.proc is not None
        assert get_metrics(stack.metrics_port)[0] == 200
        stack.proc.send_signal(signal.SIGTERM)
        assert stack.proc.wait(30) == 0
        entries = log_entries(stack)
        assert not [e for e in entries if "exception" in e or e.get("level") == "error"]
        [stopped] = [e for e in entries if e.get("event") == "metrics endpoint stopped"]
        assert stopped["pid"] == stack.proc.pid  # by the arbiter's on_exit hook
        assert listening_inodes(os.getpid(), stack.metrics_port) == set()


def test_start_and_stop_in_process(tmp_path: Path) -> None:
    disabled = Settings(metrics_host="127.0.0.1", metrics_port=0)
    assert start_metrics_server(disabled, path=str(tmp_path)) is None
    settings = Settings(metrics_host="127.0.0.1", metrics_port=free_port())
    server = start_metrics_server(settings, path=str(tmp_path))
    assert server is not None
    try:
        status, content_type, text = get_metrics(settings.metrics_port)
        assert status == 200 and content_type.startswith(TEXT_FORMAT)
        assert text == ""  # no worker wrote a file yet
        assert start_metrics_server(settings, path=str(tmp_path)) is None  # the port is taken
    finally:
        stop_metrics_server(server)
    assert listening_inodes(os.getpid(), settings.metrics_port) == set()  # released
    missing = str(tmp_path / "missing")
    assert start_metrics_server(settings, path=missing) is None  # not a directory: a warning


def test_the_endpoint_starts_without_a_name_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stdlib server looks its bind address up by name (``socket.getfqdn``); ours must not,
    or an unanswering resolver holds up the arbiter. It still answers as prometheus-client's
    app does: the exposition, gzipped when asked, and 200 for ``/`` too."""

    def no_lookup(*args: object) -> str:
        raise AssertionError("the metrics server looked a name up")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    monkeypatch.setattr(socket, "gethostbyaddr", no_lookup)
    for host, connect in (("127.0.0.1", "127.0.0.1"), ("::1", "::1")):
        settings = Settings(metrics_host=host, metrics_port=free_port())
        server = start_metrics_server(settings, path=str(tmp_path))
        if server is None:  # a host without IPv6 loopback: a warning, not an error
            assert host == "::1", "the IPv4 endpoint did not start"
            continue
        try:
            conn = http.client.HTTPConnection(connect, settings.metrics_port, timeout=10)
            try:
                conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
                response = conn.getresponse()
                body = response.read()
                assert response.status == 200, body
                assert response.getheader("content-encoding") == "gzip"
                conn.request("GET", "/")
                response = conn.getresponse()
                assert response.status == 200
                assert response.getheader("content-type", "").startswith(TEXT_FORMAT)
                response.read()
            finally:
                conn.close()
        finally:
            stop_metrics_server(server)
