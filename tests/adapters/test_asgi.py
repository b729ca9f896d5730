"""The ASGI 3 adapter, driven by a fake ASGI server (protocol tests against a fake transport)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from service import asgi_app
from service.settings import Settings
from service.subscriptions.fanout import attached
from support.polling import apoll_until
from support.schemas import Ticker, schema


def http_scope(method: str = "POST", path: str = "/graphql", **headers: str) -> dict[str, Any]:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 5000),
    }


async def call_http(
    app: Any, scope: dict[str, Any], chunks: list[bytes]
) -> tuple[int, dict[str, str], bytes]:
    incoming = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, body = sent[0], sent[1]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, body["body"]


async def test_http_post_in_chunks_and_errors() -> None:
    app = asgi_app(schema, settings=Settings(max_body_bytes=100))
    payload = json.dumps({"query": "{ hello }"}).encode()
    status, headers, body = await call_http(
        app, http_scope(content_type="application/json"), [payload[:5], payload[5:]]
    )
    assert status == 200 and json.loads(body) == {"data": {"hello": "Hello, world!"}}
    assert headers["content-length"] == str(len(body))
    status, _, body = await call_http(
        app,
        http_scope(content_type="application/json", accept="application/graphql-response+json"),
        [json.dumps({"query": "{ nope }"}).encode()],
    )
    assert status == 400 and "data" not in json.loads(body)
    status, _, _ = await call_http(
        app, http_scope(content_type="application/json"), [b"x" * 60, b"y" * 60]
    )
    assert status == 413
    status, _, _ = await call_http(
        app, http_scope(path="/elsewhere", content_type="application/json"), [payload]
    )
    assert status == 404


class FakeWebSocket:
    """Plays the ASGI server side of one WebSocket connection."""

    def __init__(self, app: Any, subprotocols: list[str], path: str = "/graphql") -> None:
        self.app = app
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outgoing: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
        self.scope = {
            "type": "websocket",
            "path": path,
            "headers": [],
            "query_string": b"",
            "subprotocols": subprotocols,
            "client": ("127.0.0.1", 5001),
        }
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FakeWebSocket:
        await self.incoming.put({"type": "websocket.connect"})
        self.task = asyncio.create_task(self.app(self.scope, self.incoming.get, self.outgoing.put))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.incoming.put({"type": "websocket.disconnect", "code": 1000})
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)

    async def send(self, message: dict[str, Any]) -> None:
        await self.incoming.put({"type": "websocket.receive", "text": json.dumps(message)})

    async def event(self) -> MutableMapping[str, Any]:
        return await asyncio.wait_for(self.outgoing.get(), 5)

    async def recv(self) -> dict[str, Any]:
        event = await self.event()
        assert event["type"] == "websocket.send", event
        data: dict[str, Any] = json.loads(event["text"])
        return data


@pytest.mark.parametrize(
    ("subprotocol", "start", "next_type"),
    [
        ("graphql-transport-ws", "subscribe", "next"),
        ("graphql-ws", "start", "data"),
    ],
)
async def test_websocket_flows_both_subprotocols(
    subprotocol: str, start: str, next_type: str
) -> None:
    app = asgi_app(schema, settings=Settings(redis_url="", ws_keepalive_s=0))
    async with FakeWebSocket(app, [subprotocol]) as ws:
        accept = await ws.event()
        assert accept == {"type": "websocket.accept", "subprotocol": subprotocol}
        await ws.send({"type": "connection_init"})
        assert (await ws.recv())["type"] == "connection_ack"
        await ws.send({"id": "q", "type": start, "payload": {"query": "mutation { bump(by: 4) }"}})
        assert await ws.recv() == {"id": "q", "type": next_type, "payload": {"data": {"bump": 5}}}
        assert await ws.recv() == {"id": "q", "type": "complete"}
        await ws.send(
            {
                "id": "s",
                "type": start,
                "payload": {"query": 'subscription { ticker(group: "asgi") { value } }'},
            }
        )
        fanout = attached()
        assert fanout is not None
        await apoll_until(
            lambda: Ticker.group_key("asgi") in fanout.broker.groups(),
            timeout_s=5,
            what="the subscription's join",
        )
        await Ticker.broadcast(group="asgi", payload={"value": 3})
        assert (await ws.recv())["payload"] == {"data": {"ticker": {"value": 3}}}


async def test_websocket_refuses_unknown_subprotocol_and_bad_frames() -> None:
    app = asgi_app(schema, settings=Settings(redis_url=""))
    async with FakeWebSocket(app, ["mqtt"]) as ws:
        assert (await ws.event())["type"] == "websocket.close"
    async with FakeWebSocket(app, ["graphql-transport-ws"]) as ws:
        await ws.event()
        await ws.incoming.put({"type": "websocket.receive", "text": "{nope"})
        close = await ws.event()
        assert close["type"] == "websocket.close" and close["code"] == 4400


async def test_lifespan_starts_and_stops_the_fanout() -> None:
    app = asgi_app(schema, settings=Settings(redis_url=""))
    incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outgoing: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan"}, incoming.get, outgoing.put))
    await incoming.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outgoing.get(), 5))["type"] == "lifespan.startup.complete"
    assert attached() is not None
    await incoming.put({"type": "lifespan.shutdown"})
    assert (await asyncio.wait_for(outgoing.get(), 5))["type"] == "lifespan.shutdown.complete"
    await task
    assert attached() is None


@pytest.mark.parametrize(
    ("subprotocol", "keepalive"),
    [("graphql-transport-ws", {"type": "ping"}), ("graphql-ws", {"type": "ka"})],
)
async def test_websocket_keepalive_uses_the_subprotocols_own_messages(
    subprotocol: str, keepalive: dict[str, Any]
) -> None:
    """ASGI has no ping frames: keep-alive is each subprotocol's own message, on both."""
    app = asgi_app(schema, settings=Settings(redis_url="", ws_keepalive_s=0.05))
    async with FakeWebSocket(app, [subprotocol]) as ws:
        assert (await ws.event())["type"] == "websocket.accept"
        await ws.send({"type": "connection_init"})
        assert (await ws.recv())["type"] == "connection_ack"
        received = [await ws.recv() for _ in range(3)]
        assert keepalive in received


@pytest.mark.parametrize(
    ("subprotocol", "start"), [("graphql-transport-ws", "subscribe"), ("graphql-ws", "start")]
)
async def test_websocket_end_awaits_its_operations(subprotocol: str, start: str) -> None:
    """When the client goes, the ASGI call returns only after its subscriptions unwound: they
    left their groups and ran ``unsubscribed``."""
    from support import schemas

    app = asgi_app(schema, settings=Settings(redis_url="", ws_keepalive_s=0))
    group = f"asgi-end-{subprotocol}"
    ws = FakeWebSocket(app, [subprotocol])
    await ws.__aenter__()
    assert (await ws.event())["type"] == "websocket.accept"
    await ws.send({"type": "connection_init"})
    assert (await ws.recv())["type"] == "connection_ack"
    query = f'subscription {{ ticker(group: "{group}") {{ value }} }}'
    await ws.send({"id": "s", "type": start, "payload": {"query": query}})
    fanout = attached()
    assert fanout is not None
    await apoll_until(
        lambda: Ticker.group_key(group) in fanout.broker.groups(), timeout_s=5, what="the join"
    )
    await ws.__aexit__()
    assert {"group": group} in schemas.UNSUBSCRIBED
    assert Ticker.group_key(group) not in fanout.broker.groups()
