"""Subscriptions over HTTP (graphql-sse, multipart) and persisted operations on a real server
with Redis: fanout, auth, a client that leaves mid-stream, APQ shared through Redis (and Redis
down or hung), persisted documents over both WebSocket subprotocols."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from service.auth import issue_token
from service.broker import DEFAULT_CHANNEL_PREFIX
from service.engine.persisted import Lookup, PersistedOperations, TrustedDocuments, sha256_hex
from service.engine.recorder import NullRecorder
from service.server.application import make_context_getter
from service.server.persisted_store import KEY_PREFIX, RedisAPQStore
from service.server.serve import Server, serve
from service.settings import Settings
from support import schemas
from support.polling import apoll_until
from support.redisutil import OwnRedis
from support.stack import REDIS_URL, free_port

SECRET = "http-streams-secret-0123456789abcdef"
SSE = "text/event-stream"
MULTIPART = "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,application/json"


class Gauges(NullRecorder):
    """Counts what the metrics would show: running subscriptions and answered operations."""

    __slots__ = ("requests", "subscribed")

    def __init__(self) -> None:
        self.subscribed = 0
        self.requests: list[tuple[str, str, str]] = []

    def subscriptions(self, delta: int) -> None:
        self.subscribed += delta

    def request(self, transport: str, operation_type: str, status: str) -> None:
        self.requests.append((transport, operation_type, status))


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, Gauges]]:
    settings = Settings(redis_url=REDIS_URL, jwt_secret=SECRET, http_stream_heartbeat_s=0.2)
    store = RedisAPQStore(REDIS_URL, ttl_s=60, timeout_s=0.5)
    recorder = Gauges()
    srv = await serve(
        schemas.schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=settings,
        get_context=make_context_getter(settings),
        recorder=recorder,
        persisted=PersistedOperations(store=store),
        on_close=[store.close],
    )
    try:
        yield srv, recorder
    finally:
        await srv.close(2.0)


class Stream:
    """A raw HTTP/1.1 streaming response read chunk by chunk."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.buffer = b""

    async def chunk(self) -> bytes:
        size = int((await asyncio.wait_for(self.reader.readline(), 10)).strip(), 16)
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), 10)
        return data[:-2]

    async def until(self, marker: bytes) -> bytes:
        """Read chunks until the body so far holds ``marker``; return the body so far."""
        while marker not in self.buffer:
            self.buffer += await self.chunk()
        return self.buffer

    def close(self) -> None:
        self.writer.close()


async def open_stream(
    port: int, body: dict[str, Any], accept: str, **headers: str
) -> tuple[Stream, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    head = [
        "POST /graphql HTTP/1.1",
        "Host: test",
        "Content-Type: application/json",
        f"Accept: {accept}",
        f"Content-Length: {len(payload)}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    stream = Stream(reader, writer)
    status_line = await asyncio.wait_for(reader.readline(), 10)
    stream.status = int(status_line.split()[1])
    while (line := await asyncio.wait_for(reader.readline(), 10)) != b"\r\n":
        name, _, value = line.decode().partition(":")
        stream.headers[name.strip().lower()] = value.strip()
    rest = b""
    if "content-length" in stream.headers:
        rest = await reader.readexactly(int(stream.headers["content-length"]))
    return stream, rest


async def subscribed(group: str) -> None:
    """Wait until ``Ticker``'s subscribe() ran for ``group`` and the server's broker has joined
    its channel in Redis (subscribe() runs before the join: an event published in between
    reaches no one)."""
    await apoll_until(lambda: group in schemas.SUBSCRIBED, timeout_s=10, what=f"{group} joined")
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:

        async def joined() -> bool:
            channel = DEFAULT_CHANNEL_PREFIX + schemas.Ticker.group_key(group)
            [(_, count)] = await client.pubsub_numsub(channel)
            return bool(count >= 1)

        await apoll_until(joined, timeout_s=10, what=f"the broker to join {group} in Redis")
    finally:
        await client.aclose()


async def test_sse_subscription_gets_fanout_events_and_ends_when_the_client_leaves(
    server: tuple[Server, Gauges],
) -> None:
    srv, gauges = server
    group = f"sse-{time.monotonic_ns()}"
    query = "subscription($g: String) { ticker(group: $g) { value } }"
    stream, _ = await open_stream(srv.tcp_port(), {"query": query, "variables": {"g": group}}, SSE)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers["x-accel-buffering"] == "no"
    assert stream.headers["transfer-encoding"] == "chunked"
    await subscribed(group)
    await schemas.Ticker.broadcast(group=group, payload={"value": 7})
    body = await stream.until(b"\n\nevent")  # the event, whatever heartbeats came first
    await stream.until(b'"value":7')
    assert b'event: next\ndata: {"data":{"ticker":{"value":7}}}\n\n' in stream.buffer, body
    # Idle: keepalive comments.
    stream.buffer = b""
    assert await stream.chunk() == b":\n\n"
    assert gauges.subscribed == 1
    before = len(schemas.UNSUBSCRIBED)
    stream.close()
    await apoll_until(
        lambda: len(schemas.UNSUBSCRIBED) > before and gauges.subscribed == 0,
        timeout_s=10,
        what="the subscription to end",
    )
    await apoll_until(
        lambda: ("sse", "subscription", "cancelled") in gauges.requests,
        timeout_s=10,
        what="the request to be counted",
    )


async def test_multipart_subscription_with_auth_and_server_side_unsubscribe(
    server: tuple[Server, Gauges],
) -> None:
    srv, gauges = server
    group = f"mp-{time.monotonic_ns()}"
    token = issue_token(Settings(jwt_secret=SECRET), sub="alice")
    stream, _ = await open_stream(
        srv.tcp_port(),
        {"query": f'subscription {{ ticker(group: "{group}") {{ value }} }}'},
        MULTIPART,
        Authorization=f"Bearer {token}",
    )
    assert stream.status == 200
    assert stream.headers["content-type"] == (
        'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
    )
    await subscribed(group)
    await schemas.Ticker.broadcast(group=group, payload={"value": 1})
    await stream.until(b'{"payload":{"data":{"ticker":{"value":1}}}}\r\n--graphql')
    await schemas.Ticker.unsubscribe(group=group)
    body = await stream.until(b"\r\n--graphql--\r\n")
    assert body.startswith(b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n")
    assert await stream.chunk() == b""  # the last chunk: the response is complete
    stream.close()
    assert ("multipart", "subscription", "complete") in gauges.requests
    # A bad token is refused before anything streams.
    stream, rest = await open_stream(
        srv.tcp_port(), {"query": "subscription { count }"}, MULTIPART, Authorization="Bearer x"
    )
    stream.close()
    assert stream.status == 401
    assert json.loads(rest)["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def post(port: int, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    stream, rest = await open_stream(port, body, "application/json")
    stream.close()
    return stream.status, json.loads(rest)


async def test_apq_is_shared_through_redis(server: tuple[Server, Gauges]) -> None:
    srv, _ = server
    query = f"query Apq{time.monotonic_ns()} {{ hello }}"
    digest = sha256_hex(query)
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    status, body = await post(srv.tcp_port(), {"extensions": ext})
    assert body["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
    status, body = await post(srv.tcp_port(), {"query": query, "extensions": ext})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    # Another worker (or this one after a restart) finds it in Redis.
    store = RedisAPQStore(REDIS_URL, ttl_s=60, timeout_s=0.5)
    try:
        assert await store.get(digest) == query
        assert 0 < await store.client.ttl(KEY_PREFIX + digest) <= 60
        lookup = PersistedOperations(store=store).resolve("", digest)
        assert not isinstance(lookup, Lookup)  # not in the fresh LRU: asks Redis
        assert (await lookup).query == query
    finally:
        await store.client.delete(KEY_PREFIX + digest)
        await store.close()


async def test_apq_with_redis_down_or_hung_degrades_to_not_found(tmp_path: Path) -> None:
    own = OwnRedis(free_port(), tmp_path)
    await own.start()
    store = RedisAPQStore(own.url, ttl_s=60, timeout_s=0.2)
    settings = Settings(redis_url="")
    srv = await serve(
        schemas.schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=settings,
        recorder=NullRecorder(),
        persisted=PersistedOperations(store=store, timeout_s=0.2),
    )
    try:
        for breakage in ("hung", "down"):
            if breakage == "hung":
                own.freeze()
            else:
                own.thaw()
                await own.stop()
            query = f"query Down{time.monotonic_ns()} {{ hello }}"
            ext = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}
            t0 = time.monotonic()
            status, body = await post(srv.tcp_port(), {"extensions": ext})
            assert (status, body["errors"][0]["extensions"]["code"]) == (
                200,
                "PERSISTED_QUERY_NOT_FOUND",
            ), breakage
            # Apollo's fallback: the full document runs.
            status, body = await post(srv.tcp_port(), {"query": query, "extensions": ext})
            assert (status, body) == (200, {"data": {"hello": "Hello, world!"}}), breakage
            assert time.monotonic() - t0 < 3.0, breakage
            if breakage == "hung":
                # The store rests for a second after a failure; let that pass before the next.
                await apoll_until(
                    lambda: not srv.handler.core.persisted._store_resting(),
                    timeout_s=5,
                    what="the store's rest to end",
                )
    finally:
        await srv.close(2.0)
        with contextlib.suppress(Exception):
            await store.close()
        await own.stop()


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_persisted_documents_over_websocket(
    server: tuple[Server, Gauges], subprotocol: str
) -> None:
    srv, _ = server
    start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
    query = f"query Ws{time.monotonic_ns()} {{ hello }}"
    ext = {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}
    async with ws_connect(
        f"ws://127.0.0.1:{srv.tcp_port()}/graphql", subprotocols=[Subprotocol(subprotocol)]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))

        async def recv() -> dict[str, Any]:
            while True:
                message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] not in ("ka", "ping"):
                    return message

        assert (await recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": start, "payload": {"extensions": ext}}))
        error = await recv()
        assert error["type"] == "error", error
        errors = error["payload"] if subprotocol == "graphql-transport-ws" else [error["payload"]]
        assert errors[0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"
        await ws.send(
            json.dumps({"id": "2", "type": start, "payload": {"query": query, "extensions": ext}})
        )
        assert (await recv())["payload"] == {"data": {"hello": "Hello, world!"}}
        assert (await recv())["type"] == "complete"
        await ws.send(json.dumps({"id": "3", "type": start, "payload": {"extensions": ext}}))
        assert (await recv())["payload"] == {"data": {"hello": "Hello, world!"}}


async def test_trusted_only_refuses_other_documents_over_http_sse_and_websocket() -> None:
    trusted = TrustedDocuments.parse({sha256_hex("query T { hello }"): "query T { hello }"})
    srv = await serve(
        schemas.schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=Settings(redis_url=""),
        recorder=NullRecorder(),
        persisted=PersistedOperations(trusted=trusted, mode="trusted-only"),
    )
    try:
        port = srv.tcp_port()
        status, body = await post(port, {"query": "{ hello }"})
        assert (status, body["errors"][0]["extensions"]["code"]) == (200, "OPERATION_NOT_TRUSTED")
        status, body = await post(port, {"documentId": sha256_hex("query T { hello }")})
        assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
        stream, _ = await open_stream(port, {"query": "subscription { count }"}, SSE)
        body_bytes = await stream.until(b"event: complete")
        stream.close()
        assert b"OPERATION_NOT_TRUSTED" in body_bytes
        async with ws_connect(
            f"ws://127.0.0.1:{port}/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
            )
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] == "error"
            assert message["payload"][0]["extensions"]["code"] == "OPERATION_NOT_TRUSTED"
            payload = {"documentId": sha256_hex("query T { hello }")}
            await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["payload"] == {"data": {"hello": "Hello, world!"}}
    finally:
        await srv.close(2.0)
