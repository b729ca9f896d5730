"""Real clients through nginx and two gunicorn workers: Apollo Client (automatic persisted
queries over POST and GET, a subscription over its multipart HTTP support), the graphql-sse
client (distinct connections mode), gql's AIOHTTPTransport with persisted documents, and a
trusted documents manifest. Subscriptions get their events through Redis fanout, end when the
client leaves, and the metrics come back to zero.

The Node clients live in ``tests/clients`` (package.json + package-lock.json); ``npm ci``
installs them when ``node_modules`` is missing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from service.broker import make_broker
from service.engine.persisted import sha256_hex
from support import schemas
from support.polling import apoll_until, poll_until
from support.stack import REDIS_URL, Stack, request, running_stack

pytestmark = pytest.mark.timeout(180)

CLIENTS = Path(__file__).resolve().parent.parent / "clients"
TRUSTED = "query TrustedHello { hello }"


@pytest.fixture(scope="module")
def node_clients() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js (20+) is needed for the client tests")
    if not (CLIENTS / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENTS, check=True, timeout=300
        )
    return CLIENTS


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    manifest = tmp_path_factory.mktemp("trusted") / "persisted-documents.json"
    manifest.write_text(json.dumps({sha256_hex(TRUSTED): TRUSTED}))  # GraphQL Codegen's format
    os.chmod(manifest.parent, 0o755)
    env = {"TRUSTED_DOCUMENTS": str(manifest), "HTTP_STREAM_HEARTBEAT_S": "1"}
    with running_stack(workers=2, app="support.schemas:schema", env=env) as s:
        yield s


def channel_of(group: str) -> str:
    return "graphql-service:" + schemas.Ticker.group_key(group)


def group_subscribers(group: str) -> int:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        counts = dict(client.pubsub_numsub(channel_of(group)))
    finally:
        client.close()
    return int(counts.get(channel_of(group).encode(), 0))


async def broadcast(group: str, *values: int) -> None:
    broker = make_broker(REDIS_URL)
    await broker.start()
    try:
        for value in values:
            await broker.publish(*schemas.Ticker.event(group, {"value": value}))
    finally:
        await broker.close()


def metric(stack: Stack, name: str, labels: str = "") -> float:
    """The value of a metric line as the arbiter's endpoint serves it (0 when absent)."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.metrics_port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(part in line for part in labels.split(",") if part):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Client:
    """A Node client process whose JSON lines are read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def until(self, step: str, timeout_s: float = 30) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            line = await asyncio.wait_for(
                self.proc.stdout.readline(), max(0.1, deadline - time.monotonic())
            )
            if not line:
                stderr = b""
                if self.proc.stderr is not None:
                    stderr = await self.proc.stderr.read()
                raise AssertionError(f"client ended before {step!r}: {self.lines} {stderr!r}")
            message: dict[str, Any] = json.loads(line)
            self.lines.append(message)
            if message["step"] == "failed":
                raise AssertionError(message["error"])
            if message["step"] == step:
                return message


async def run_node(script: str, stack: Stack, group: str) -> AsyncIterator[Client]:
    proc = await asyncio.create_subprocess_exec(
        "node",
        script,
        f"http://127.0.0.1:{stack.port}/graphql",
        group,
        cwd=CLIENTS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Client(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def fanout_round(client: Client, subscribing: str, done: str, group: str) -> dict[str, Any]:
    """Wait until the client's subscription joined its group (in Redis), broadcast two events,
    and check the worker leaves the group once the client has gone."""
    await client.until(subscribing)
    await apoll_until(lambda: group_subscribers(group) >= 1, timeout_s=15, what="joined")
    await broadcast(group, 1, 2)
    result = await client.until(done)
    await apoll_until(lambda: group_subscribers(group) == 0, timeout_s=15, what="left")
    return result


async def test_apollo_client_persisted_queries_and_multipart_subscription(
    stack: Stack, node_clients: Path
) -> None:
    group = f"apollo-{time.monotonic_ns()}"
    async for client in run_node("apollo.mjs", stack, group):
        first = await client.until("apq-post")
        assert first["data"] == {"hello": "Hello, world!"}
        # Hash only, PersistedQueryNotFound, then the document with its hash.
        assert [(s["method"], s["query"], bool(s["hash"])) for s in first["sent"]] == [
            ("POST", False, True),
            ("POST", True, True),
        ]
        again = await client.until("apq-post-again")  # a fresh client: the hash alone works
        assert [(s["method"], s["query"]) for s in again["sent"]] == [("POST", False)]
        via_get = await client.until("apq-get")
        assert via_get["data"] == {"echo": "5"}
        assert [(s["method"], s["query"]) for s in via_get["sent"]] == [
            ("GET", False),
            ("POST", True),
        ]
        get_again = await client.until("apq-get-again")
        assert get_again["data"] == {"echo": "6"}
        assert [(s["method"], s["query"]) for s in get_again["sent"]] == [("GET", False)]

        counted = await client.until("multipart-complete")
        assert counted["completed"]
        assert counted["values"] == [{"count": 0}, {"count": 1}, {"count": 2}]
        ticks = await fanout_round(client, "multipart-subscribing", "multipart-fanout", group)
        assert [tick["ticker"]["value"] for tick in ticks["values"]] == [1, 2]
        await client.until("done")
    await apoll_until(
        lambda: metric(stack, "graphql_active_subscriptions") == 0, timeout_s=10, what="zero"
    )
    await apoll_until(
        lambda: metric(stack, "graphql_requests_total", 'transport="multipart"') >= 2,
        timeout_s=10,
        what="multipart requests counted",
    )


async def test_graphql_sse_client_distinct_connections(stack: Stack, node_clients: Path) -> None:
    group = f"sse-{time.monotonic_ns()}"
    async for client in run_node("sse.mjs", stack, group):
        assert (await client.until("query"))["results"] == [{"data": {"hello": "Hello, world!"}}]
        assert (await client.until("complete"))["results"] == [
            {"data": {"count": 0}},
            {"data": {"count": 1}},
            {"data": {"count": 2}},
        ]
        (errors,) = (await client.until("errors"))["results"]
        assert errors["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        ticks = await fanout_round(client, "subscribing", "fanout", group)
        assert ticks["results"] == [
            {"data": {"ticker": {"value": 1}}},
            {"data": {"ticker": {"value": 2}}},
        ]
        await client.until("done")
    await apoll_until(
        lambda: metric(stack, "graphql_active_subscriptions") == 0, timeout_s=10, what="zero"
    )
    await apoll_until(
        lambda: metric(stack, "graphql_requests_total", 'transport="sse"') >= 4,
        timeout_s=10,
        what="SSE requests counted",
    )


def test_sse_through_nginx_is_not_buffered(stack: Stack) -> None:
    """nginx passes each event on as it is written (X-Accel-Buffering: no): the first event of
    a subscription that then stays idle arrives, and keepalive comments follow."""
    conn = stack.http(timeout=10)
    body = json.dumps({"query": 'subscription { ticker(group: "idle") { value } }'})
    conn.request(
        "POST",
        "/graphql",
        body=body,
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("content-type", "").startswith("text/event-stream")
    seen = b""
    deadline = time.monotonic() + 10
    while seen.count(b":\n\n") < 2 and time.monotonic() < deadline:
        seen += response.read1(1024)
    assert seen.count(b":\n\n") >= 2, seen
    conn.close()


def test_gql_aiohttp_transport_with_persisted_documents(stack: Stack) -> None:
    """gql 4 has no APQ link and no multipart subscription transport; its AIOHTTPTransport
    carries the APQ exchange when the request body is given (``extra_args``)."""
    from gql import Client, gql
    from gql.transport.aiohttp import AIOHTTPTransport
    from gql.transport.exceptions import TransportQueryError

    query = f"query Gql{time.monotonic_ns()} {{ hello }}"
    ext = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}

    async def scenario() -> None:
        transport = AIOHTTPTransport(url=f"http://127.0.0.1:{stack.port}/graphql")
        async with Client(transport=transport) as session:
            document = gql(query)
            with pytest.raises(TransportQueryError) as missing:
                await session.execute(document, extra_args={"json": {"extensions": ext}})
            assert missing.value.errors is not None
            assert missing.value.errors[0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
            registered = await session.execute(
                document, extra_args={"json": {"query": query, "extensions": ext}}
            )
            assert registered == {"hello": "Hello, world!"}
            by_hash = await session.execute(document, extra_args={"json": {"extensions": ext}})
            assert by_hash == {"hello": "Hello, world!"}
            trusted = await session.execute(
                gql(TRUSTED), extra_args={"json": {"documentId": f"sha256:{sha256_hex(TRUSTED)}"}}
            )
            assert trusted == {"hello": "Hello, world!"}
            # A plain request through gql is unchanged.
            assert await session.execute(gql("{ hello }")) == {"hello": "Hello, world!"}

    asyncio.run(scenario())


def test_unknown_and_wrong_hashes_through_nginx(stack: Stack) -> None:
    conn = stack.http()
    try:
        unknown = {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}}
        status, _, body = request(conn, "POST", "/graphql", {"extensions": unknown})
        assert status == 200
        assert json.loads(body)["errors"][0]["message"] == "PersistedQueryNotFound"
        status, _, body = request(
            conn, "POST", "/graphql", {"query": "{ hello }", "extensions": unknown}
        )
        assert status == 400
        assert re.search("does not match", json.loads(body)["errors"][0]["message"])
        # The trusted document, preloaded in every worker, runs by id over GET (cacheable).
        qs = f"documentId=sha256:{sha256_hex(TRUSTED)}"
        for _ in range(2):  # both workers (least_conn spreads sequential requests)
            status, _, body = request(conn, "GET", f"/graphql?{qs}")
            assert (status, json.loads(body)) == (200, {"data": {"hello": "Hello, world!"}})
    finally:
        conn.close()
    poll_until(lambda: stack.slot_pids(), timeout_s=5, what="workers still up")
