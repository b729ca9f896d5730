"""Shared execution of subscription events (``Subscription.share_results``): one execution per
event and distinct (document, variables, published value, result key) in a worker, the same
frames as before, per-subscriber SKIP, order and queue limits kept; both subprotocols, both
brokers."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from service.server.serve import Server, serve
from service.server.ws_native import NativeWebSocket
from service.settings import Settings
from support import schemas
from support.schemas import Shared, TinyShared, schema

pytestmark = pytest.mark.timeout(60)

START = {"graphql-transport-ws": "subscribe", "graphql-ws": "start"}
NEXT = {"graphql-transport-ws": "next", "graphql-ws": "data"}


@pytest.fixture(params=["", "redis://127.0.0.1:6379/0"], ids=["memory", "redis"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    def context(http_request: Any) -> dict[str, Any]:
        viewer = http_request.headers.get("x-viewer")
        return {"request": http_request, "request_id": http_request.request_id, "viewer": viewer}

    srv = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        # Each subscription's first message, {"data": null}, says it has joined its groups.
        settings=Settings(redis_url=request.param, confirm_subscriptions=True),
        get_context=context,
    )
    try:
        yield srv
    finally:
        await srv.close(2.0)


async def subscriber(
    srv: Server,
    subprotocol: str,
    query: str,
    viewer: str = "anyone",
    variables: dict[str, Any] | None = None,
    max_queue: int = 16,
) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{srv.tcp_port()}/graphql",
        subprotocols=[subprotocol],  # type: ignore[list-item]
        additional_headers={"X-Viewer": viewer},
        max_queue=max_queue,
        max_size=None,
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
    payload = {"query": query, "variables": variables}
    await ws.send(json.dumps({"id": "s", "type": START[subprotocol], "payload": payload}))
    while True:  # the confirmation (skipping graphql-ws keep-alives)
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] != "ka":
            break
    assert message["payload"] == {"data": None}, message
    return ws


async def values(ws: ClientConnection, subprotocol: str, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "ka":
            continue
        assert message["type"] == NEXT[subprotocol], message
        assert message["id"] == "s"
        out.append(message["payload"]["data"])
    return out


QUERY = "subscription($who: String) { shared(who: $who) { value viewer } }"


@pytest.mark.parametrize("subprotocol", list(START))
async def test_one_execution_per_event_for_many_subscribers(
    server: Server, subprotocol: str
) -> None:
    clients = [await subscriber(server, subprotocol, QUERY) for _ in range(8)]
    schemas.EXECUTED.clear()
    token = uuid.uuid4().int % 1000
    for i in range(5):
        await Shared.broadcast(payload={"item": {"value": token + i}})
    for ws in clients:
        got = await values(ws, subprotocol, 5)
        assert got == [{"shared": {"value": token + i, "viewer": "anyone"}} for i in range(5)]
        await ws.close()
    assert [token + i for i in range(5)] == schemas.EXECUTED, "one execution per event"


async def test_results_that_depend_on_the_viewer_are_not_shared(server: Server) -> None:
    alice = await subscriber(server, "graphql-transport-ws", QUERY, viewer="alice")
    bob = await subscriber(server, "graphql-transport-ws", QUERY, viewer="bob")
    schemas.EXECUTED.clear()
    await Shared.broadcast(payload={"item": {"value": 7}})
    assert await values(alice, "graphql-transport-ws", 1) == [
        {"shared": {"value": 7, "viewer": "alice"}}
    ]
    assert await values(bob, "graphql-transport-ws", 1) == [
        {"shared": {"value": 7, "viewer": "bob"}}
    ]
    assert schemas.EXECUTED == [7, 7], "one execution per result key"
    await alice.close()
    await bob.close()


async def test_skip_order_and_variables_per_subscriber(server: Server) -> None:
    carol = await subscriber(server, "graphql-ws", QUERY, variables={"who": "carol"})
    dave = await subscriber(server, "graphql-transport-ws", QUERY, variables={"who": "dave"})
    for i in range(20):
        skip = ["carol"] if i % 3 == 0 else []
        await Shared.broadcast(payload={"item": {"value": i}, "skip": skip})
    carol_got = [v["shared"]["value"] for v in await values(carol, "graphql-ws", 13)]
    dave_got = [v["shared"]["value"] for v in await values(dave, "graphql-transport-ws", 20)]
    assert carol_got == [i for i in range(20) if i % 3 != 0]
    assert dave_got == list(range(20))
    await carol.close()
    await dave.close()


async def test_queue_overflow_keeps_first_and_last_with_shared_payloads(server: Server) -> None:
    """Subscribers whose sockets cannot take more bytes fall back to their queue (a queue of
    one: drop oldest): once they read again they get an increasing run ending with the last."""
    query = "subscription { tinyShared { value pad } }"
    # max_queue=1: the client library stops reading its socket while a message waits unread.
    clients = [
        await subscriber(server, "graphql-transport-ws", query, max_queue=1) for _ in range(3)
    ]
    sockets = [c for c in server.connections if isinstance(c, NativeWebSocket)]
    assert len(sockets) == 3
    pad = "x" * 262_144
    value = 0
    deadline = asyncio.get_running_loop().time() + 30
    # Big events until every server-side socket is over its high-water mark (kernel buffers
    # full, the client not reading); then ten small ones, broadcast at once.
    while not all(sock.write_paused for sock in sockets):
        assert asyncio.get_running_loop().time() < deadline, "the sockets never filled up"
        await TinyShared.broadcast(payload={"item": {"value": value, "pad": pad}})
        value += 1
        await asyncio.sleep(0.01)
    last_big = value - 1
    await asyncio.gather(
        *(TinyShared.broadcast(payload={"item": {"value": 1000 + i}}) for i in range(10))
    )
    for ws in clients:
        got: list[int] = []
        while not got or got[-1] != 1009:
            got += [v["tinyShared"]["value"] for v in await values(ws, "graphql-transport-ws", 1)]
        assert got == sorted(set(got)), got
        small = [v for v in got if v >= 1000]
        assert len(small) < 10, "the queue of one dropped the oldest while the socket was full"
        assert got[0] == 0 and all(v <= last_big for v in got if v < 1000)
        await ws.close()
