"""The limits of ``tests/unit/test_limits.py`` once over the wire, on a real in-process server.

Each limit is shown on both sides of its boundary through ``HTTPCore`` in the unit file; here a
server on TCP port 0 refuses each with the same code, times operations out over HTTP and
WebSocket, answers overload with 503 at once, and enforces the WebSocket limits of the legacy
protocol (those of graphql-transport-ws are in ``tests/server/test_websocket.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.server.serve import Server, serve
from service.settings import Settings
from support.polling import apoll_until
from support.schemas import schema
from tests.unit.test_limits import aliased, fragment_bomb, nested


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[Server]:
    settings = Settings(redis_url="", **overrides)
    srv = await serve(schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings)
    assert isinstance(srv, Server)
    try:
        yield srv
    finally:
        await srv.close(2.0)


async def post(
    port: int, body: dict[str, Any], timeout_s: float = 10.0
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One POST /graphql on a fresh connection; status, lower-cased headers, JSON body."""
    payload = orjson.dumps(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
        )
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(rest)


WIRE_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("depth", {"query": nested(5)}, 200, "QUERY_TOO_DEEP"),
    ("aliases", {"query": aliased(3)}, 200, "TOO_MANY_ALIASES"),
    ("fields", {"query": "{ " + "hello " * 101 + "}"}, 200, "TOO_MANY_FIELDS"),
    ("fragment bomb", {"query": fragment_bomb(12)}, 200, "QUERY_TOO_DEEP"),
    ("document", {"query": "{ hello }" + " " * 1000}, 413, "DOCUMENT_TOO_LARGE"),
    (
        "variables",
        {"query": "query($v: Int!) { echo(value: $v) }", "variables": {"v": 1, "p": "x" * 300}},
        413,
        "VARIABLES_TOO_LARGE",
    ),
    ("introspection", {"query": "{ __schema { types { name } } }"}, 200, "INTROSPECTION_DISABLED"),
]


async def test_limits_over_the_wire() -> None:
    async with running(
        max_depth=4,
        max_aliases=2,
        max_fields=100,
        max_document_bytes=1000,
        max_variables_bytes=200,
        introspection=False,
    ) as srv:
        port = srv.tcp_port()
        for name, body, status, code in WIRE_CASES:
            got, _, answer = await post(port, body)
            assert got == status, (name, answer)
            assert answer["errors"][0]["extensions"]["code"] == code, (name, answer)
            assert "data" not in answer, name
        # Within every limit the same server answers.
        got, _, answer = await post(port, {"query": nested(4)})
        assert got == 200 and answer["data"]["item"]["child"]["child"]["name"] == "child"


async def test_operation_timeout_over_http_and_websocket() -> None:
    async with running(operation_timeout_s=0.2) as srv:
        started = time.monotonic()
        status, _, body = await post(srv.tcp_port(), {"query": "{ slow(seconds: 5) hello }"})
        assert time.monotonic() - started < 3.0
        assert status == 200
        assert body["data"] is None
        [error] = body["errors"]
        assert error == {
            "message": "The operation timed out after 0.2 s.",
            "extensions": {"code": "OPERATION_TIMEOUT"},
        }
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            query = {"query": "{ slow(seconds: 5) }"}
            await ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": query}))
            result = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert result["type"] == "next"
            assert result["payload"]["errors"][0]["extensions"]["code"] == "OPERATION_TIMEOUT"
            done = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert done == {"id": "t", "type": "complete"}


async def test_overload_answers_503_at_once_while_in_flight_requests_finish() -> None:
    async with running(max_inflight=2) as srv:
        port = srv.tcp_port()
        engine = srv.handler.core.engine
        slow = [
            asyncio.ensure_future(post(port, {"query": "{ slow(seconds: 2) }"})) for _ in range(2)
        ]
        await apoll_until(
            lambda: engine.inflight >= 2, timeout_s=5, what="both slow requests in flight"
        )

        started = time.monotonic()
        status, headers, body = await post(port, {"query": "{ slow(seconds: 0.01) }"})
        assert time.monotonic() - started < 1.0  # answered at once, not queued
        assert status == 503
        assert headers["retry-after"] == "1"
        assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert "limit of 2 operations" in body["errors"][0]["message"]
        assert not any(task.done() for task in slow)

        for status, _, body in await asyncio.gather(*slow):
            assert status == 200 and body == {"data": {"slow": "slept 2.0"}}
        status, _, body = await post(port, {"query": "{ hello }"})
        assert status == 200 and body == {"data": {"hello": "Hello, world!"}}


# --- WebSocket limits on the legacy protocol --------------------------------------------------


async def legacy_init(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"


async def next_non_ka(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    """The next message that is not a keep-alive, within ``timeout_s`` in all."""
    async with asyncio.timeout(timeout_s):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] != "ka":
                return message


async def test_legacy_websocket_limits() -> None:
    async with running(ws_max_subscriptions=2, ws_max_message_bytes=2048) as srv:
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
            await legacy_init(ws)
            for op_id in ("1", "2", "3"):
                query = {"query": "subscription { ticker { value } }"}
                await ws.send(json.dumps({"id": op_id, "type": "start", "payload": query}))
            message = await next_non_ka(ws)
            assert message == {
                "type": "error",
                "id": "3",
                "payload": {"message": "too many operations on this connection"},
            }
            # Stopping one makes room again.
            await ws.send(json.dumps({"id": "1", "type": "stop"}))
            assert await next_non_ka(ws) == {"id": "1", "type": "complete"}
            await ws.send(
                json.dumps({"id": "4", "type": "start", "payload": {"query": "{ hello }"}})
            )
            assert (await next_non_ka(ws))["payload"] == {"data": {"hello": "Hello, world!"}}

            await ws.send(
                json.dumps({"id": "5", "type": "start", "payload": {"query": "x" * 3000}})
            )
            # Whatever is still in flight, the server closes within the deadline.
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1009
