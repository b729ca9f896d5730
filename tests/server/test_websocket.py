"""GraphQL over WebSocket on the native transport: both subprotocols, the Subscription class,
bad frames and their close codes. One real server per test, in-memory broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.server.serve import Server, serve
from service.settings import Settings
from service.subscriptions.fanout import attached
from support import schemas
from support.polling import apoll_until
from support.schemas import Ticker, TinyQueueTicker, schema

TWS = "graphql-transport-ws"
LEGACY = "graphql-ws"


async def start_server(**overrides: Any) -> Server:
    options: dict[str, Any] = {}
    for key in ("on_connect", "middleware"):
        if key in overrides:
            options[key] = overrides.pop(key)
    settings = Settings(
        redis_url="", ws_init_timeout_s=overrides.pop("ws_init_timeout_s", 3.0), **overrides
    )
    return await serve(
        schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings, **options
    )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await start_server()
    try:
        yield srv
    finally:
        await srv.close(2.0)


def url(srv: Server) -> str:
    return f"ws://127.0.0.1:{srv.tcp_port()}/graphql"


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    data: dict[str, Any] = json.loads(message)
    return data


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes; return its close code and reason."""
    with pytest.raises(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def init(ws: ClientConnection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    ack = await recv(ws)
    assert ack["type"] == "connection_ack", ack
    return ack


async def wait_joined(group_key: str) -> None:
    """Poll the running loop's fanout until a local subscriber holds ``group_key``."""
    fanout = attached()
    assert fanout is not None
    await apoll_until(
        lambda: group_key in fanout.broker.groups(), timeout_s=5, what=f"a join of {group_key}"
    )


# --- graphql-transport-ws ---------------------------------------------------------------------
async def test_transport_ws_query_mutation_and_subscription(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == TWS
        await init(ws)
        await ws.send(
            json.dumps({"id": "q", "type": "subscribe", "payload": {"query": "{ hello }"}})
        )
        assert await recv(ws) == {
            "id": "q",
            "type": "next",
            "payload": {"data": {"hello": "Hello, world!"}},
        }
        assert await recv(ws) == {"id": "q", "type": "complete"}
        await ws.send(
            json.dumps(
                {"id": "m", "type": "subscribe", "payload": {"query": "mutation { bump(by: 2) }"}}
            )
        )
        assert (await recv(ws))["payload"] == {"data": {"bump": 3}}
        assert await recv(ws) == {"id": "m", "type": "complete"}
        await ws.send(
            json.dumps(
                {
                    "id": "s",
                    "type": "subscribe",
                    "payload": {"query": "subscription { count(upto: 3) }"},
                }
            )
        )
        values = [(await recv(ws))["payload"]["data"]["count"] for _ in range(3)]
        assert values == [0, 1, 2]
        assert await recv(ws) == {"id": "s", "type": "complete"}


async def test_transport_ws_validation_error_is_error_message(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await ws.send(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ nope }"}})
        )
        message = await recv(ws)
        assert message["type"] == "error" and message["id"] == "1"
        assert "nope" in message["payload"][0]["message"]


async def test_transport_ws_ping_pong_and_websocket_ping(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}
        pong = await ws.ping(b"x")
        await asyncio.wait_for(pong, 5)  # the WebSocket-level pong arrived


async def test_client_complete_stops_a_subscription(server: Server) -> None:
    schemas.UNSUBSCRIBED.clear()
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await ws.send(
            json.dumps(
                {
                    "id": "t",
                    "type": "subscribe",
                    "payload": {"query": 'subscription { ticker(group: "c") { value } }'},
                }
            )
        )
        await wait_joined(Ticker.group_key("c"))
        await Ticker.broadcast(group="c", payload={"value": 1})
        assert (await recv(ws))["payload"] == {"data": {"ticker": {"value": 1}}}
        await ws.send(json.dumps({"id": "t", "type": "complete"}))
        for _ in range(500):
            if schemas.UNSUBSCRIBED:
                break
            await asyncio.sleep(0.01)
        assert schemas.UNSUBSCRIBED == [{"group": "c"}]


# --- legacy graphql-ws --------------------------------------------------------------------------
async def test_legacy_query_mutation_subscription_and_ka(server: Server) -> None:
    async with connect(url(server), subprotocols=[LEGACY]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == LEGACY
        await init(ws)
        first = await recv(ws)
        assert first == {"type": "ka"}
        await ws.send(json.dumps({"id": "1", "type": "start", "payload": {"query": "{ hello }"}}))
        assert await recv(ws) == {
            "id": "1",
            "type": "data",
            "payload": {"data": {"hello": "Hello, world!"}},
        }
        assert await recv(ws) == {"id": "1", "type": "complete"}
        await ws.send(
            json.dumps({"id": "2", "type": "start", "payload": {"query": "mutation { bump }"}})
        )
        assert (await recv(ws))["payload"] == {"data": {"bump": 2}}
        assert await recv(ws) == {"id": "2", "type": "complete"}
        await ws.send(
            json.dumps(
                {
                    "id": "3",
                    "type": "start",
                    "payload": {"query": "subscription { count(upto: 2) }"},
                }
            )
        )
        assert [(await recv(ws))["payload"]["data"]["count"] for _ in range(2)] == [0, 1]
        assert await recv(ws) == {"id": "3", "type": "complete"}
        await ws.send(json.dumps({"type": "connection_terminate"}))
        code, _ = await closed_with(ws)
        assert code == 1000


async def test_both_offered_picks_transport_ws_and_neither_is_refused(server: Server) -> None:
    async with connect(url(server), subprotocols=[LEGACY, TWS]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == TWS
    with pytest.raises(InvalidStatus) as info:
        async with connect(url(server), subprotocols=["mqtt"]):  # type: ignore[list-item]
            pass
    assert info.value.response.status_code == 400
    assert b"graphql-transport-ws" in info.value.response.body


# --- the Subscription class ----------------------------------------------------------------
async def subscribe(ws: ClientConnection, op_id: str, query: str) -> None:
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))


async def test_ordering_with_variable_publish_time(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "o", 'subscription { ticker(group: "order") { value } }')
        await wait_joined(Ticker.group_key("order"))
        for i in range(100):
            await Ticker.broadcast(group="order", payload={"value": i, "delay": (100 - i) * 0.0002})
        got = [(await recv(ws))["payload"]["data"]["ticker"]["value"] for _ in range(100)]
        assert got == list(range(100))


async def test_queue_limit_keeps_first_and_last(server: Server) -> None:
    from prometheus_client import REGISTRY

    server.recorder.flush()  # counts reach prometheus-client once a second, or now
    dropped_before = (
        REGISTRY.get_sample_value("graphql_subscription_notifications_dropped_total") or 0
    )
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "q", 'subscription { tinyTicker(group: "tiny") { value } }')
        await wait_joined(TinyQueueTicker.group_key("tiny"))
        schemas.PUBLISHING.clear()
        await TinyQueueTicker.broadcast(group="tiny", payload={"value": 0, "delay": 0.3})
        for _ in range(500):  # until the subscriber is busy publishing event 0
            if schemas.PUBLISHING:
                break
            await asyncio.sleep(0.005)
        assert schemas.PUBLISHING == [0]
        for i in range(1, 10):
            await TinyQueueTicker.broadcast(group="tiny", payload={"value": i})
        got = [(await recv(ws))["payload"]["data"]["tinyTicker"]["value"] for _ in range(2)]
        assert got == [0, 9]
        with pytest.raises(TimeoutError):
            await recv(ws, timeout=0.3)
    server.recorder.flush()
    dropped = REGISTRY.get_sample_value("graphql_subscription_notifications_dropped_total") or 0
    assert dropped - dropped_before == 8


async def test_groups_isolate_and_skip_suppresses(server: Server) -> None:
    async with (
        connect(url(server), subprotocols=[TWS]) as a,  # type: ignore[list-item]
        connect(url(server), subprotocols=[TWS]) as b,  # type: ignore[list-item]
    ):
        await init(a)
        await init(b)
        await subscribe(a, "a", 'subscription { ticker(group: "room-a") { value } }')
        await subscribe(b, "b", 'subscription { ticker(group: "room-b") { value } }')
        await wait_joined(Ticker.group_key("room-a"))
        await wait_joined(Ticker.group_key("room-b"))
        await Ticker.broadcast(group="room-a", payload={"value": 1, "skip": True})
        await Ticker.broadcast(group="room-a", payload={"value": 2})
        await Ticker.broadcast(group="room-b", payload={"value": 3})
        assert (await recv(a))["payload"]["data"]["ticker"]["value"] == 2
        assert (await recv(b))["payload"]["data"]["ticker"]["value"] == 3
        # The default group reaches both.
        await Ticker.broadcast(payload={"value": 4})
        assert (await recv(a))["payload"]["data"]["ticker"]["value"] == 4
        assert (await recv(b))["payload"]["data"]["ticker"]["value"] == 4
        with pytest.raises(TimeoutError):
            await recv(a, timeout=0.2)


async def test_server_side_unsubscribe_completes_and_stops_delivery(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "u", 'subscription { ticker(group: "bye") { value } }')
        await subscribe(ws, "k", 'subscription { ticker(group: "stay") { value } }')
        await wait_joined(Ticker.group_key("bye"))
        await wait_joined(Ticker.group_key("stay"))
        await Ticker.broadcast(group="bye", payload={"value": 1})
        assert (await recv(ws))["id"] == "u"
        await Ticker.unsubscribe(group="bye")
        assert await recv(ws) == {"id": "u", "type": "complete"}
        await Ticker.broadcast(group="bye", payload={"value": 2})
        await Ticker.broadcast(group="stay", payload={"value": 3})
        message = await recv(ws)
        assert message["id"] == "k" and message["payload"]["data"]["ticker"]["value"] == 3


async def test_confirm_subscriptions_sends_data_null_first() -> None:
    srv = await start_server(confirm_subscriptions=True)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            await subscribe(ws, "c", 'subscription { ticker(group: "confirm") { value } }')
            assert await recv(ws) == {"id": "c", "type": "next", "payload": {"data": None}}
            await Ticker.broadcast(group="confirm", payload={"value": 7})
            assert (await recv(ws))["payload"]["data"]["ticker"]["value"] == 7
    finally:
        await srv.close(2.0)


async def test_middleware_applies_to_subscription_events() -> None:
    seen: list[str] = []

    def middleware(next_: Any, root: Any, info: Any, **args: Any) -> Any:
        seen.append(info.field_name)
        return next_(root, info, **args)

    srv = await start_server(middleware=[middleware])
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            await subscribe(ws, "m", "subscription { count(upto: 1) }")
            assert (await recv(ws))["payload"]["data"]["count"] == 0
        assert "count" in seen
    finally:
        await srv.close(2.0)


async def test_mutation_broadcast_reaches_subscriber(server: Server) -> None:
    async with (
        connect(url(server), subprotocols=[TWS]) as sub,  # type: ignore[list-item]
        connect(url(server), subprotocols=[LEGACY]) as pub,  # type: ignore[list-item]
    ):
        await init(sub)
        await init(pub)
        await subscribe(sub, "s", 'subscription { ticker(group: "mut") { value } }')
        await wait_joined(Ticker.group_key("mut"))
        await pub.send(
            json.dumps(
                {
                    "id": "p",
                    "type": "start",
                    "payload": {"query": 'mutation { tick(value: 5, group: "mut") }'},
                }
            )
        )
        assert (await recv(sub))["payload"]["data"]["ticker"]["value"] == 5


async def test_sync_broadcast_from_thread(server: Server) -> None:
    """Sync broadcast from a plain thread (no loop there) reaches async subscribers."""
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "t", 'subscription { ticker(group: "thread") { value } }')
        await wait_joined(Ticker.group_key("thread"))
        await asyncio.to_thread(Ticker.broadcast, "thread", {"value": 11})
        assert (await recv(ws))["payload"]["data"]["ticker"]["value"] == 11


# --- on_connect ------------------------------------------------------------------------------
async def test_on_connect_rejects_and_enriches() -> None:
    def on_connect(payload: dict[str, Any], context: dict[str, Any]) -> Any:
        if payload.get("secret") != "ok":
            return False
        return {"user": {"sub": "alice"}, "ack": {"hello": "alice"}}

    srv = await start_server(on_connect=on_connect)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {"secret": "no"}}))
            code, _ = await closed_with(ws)
            assert code == 4403
        async with connect(url(srv), subprotocols=[LEGACY]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": {"secret": "no"}}))
            assert (await recv(ws))["type"] == "connection_error"
            code, _ = await closed_with(ws)
            assert code == 4403
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            ack = await init(ws, {"secret": "ok"})
            assert ack.get("payload") == {"hello": "alice"}
            await subscribe(ws, "w", "{ whoami }")
            assert "alice" in (await recv(ws))["payload"]["data"]["whoami"]
    finally:
        await srv.close(2.0)


# --- bad input: close codes, and the server stays healthy ------------------------------------
BAD_FRAMES: list[tuple[str, list[Any], int]] = [
    ("non-json", ["{nope"], 4400),
    ("unknown type", [{"type": "nope"}], 4400),
    ("binary frame", [b"\x00\x01"], 4400),
    (
        "subscribe before init",
        [{"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}}],
        4401,
    ),
    ("second connection_init", [{"type": "connection_init"}, {"type": "connection_init"}], 4429),
    (
        "duplicate id",
        [
            {"type": "connection_init"},
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { ticker { value } }"},
            },
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "subscription { ticker { value } }"},
            },
        ],
        4409,
    ),
    ("oversized message", [{"type": "connection_init", "payload": {"pad": "x" * 5000}}], 1009),
]


@pytest.mark.parametrize(
    ("frames", "code"), [c[1:] for c in BAD_FRAMES], ids=[c[0] for c in BAD_FRAMES]
)
async def test_bad_frames_get_their_close_code(frames: list[Any], code: int) -> None:
    srv = await start_server(ws_max_message_bytes=4096)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            for i, frame in enumerate(frames):
                await ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))
                following = frames[i + 1] if i + 1 < len(frames) else None
                if (
                    isinstance(frame, dict)
                    and frame.get("type") == "connection_init"
                    and isinstance(following, dict)
                    and following.get("type") != "connection_init"
                ):
                    assert (await recv(ws))["type"] == "connection_ack"
            got, reason = await closed_with(ws)
            assert got == code, reason
        # The worker is healthy: a new connection works.
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            await subscribe(ws, "h", "{ hello }")
            assert (await recv(ws))["payload"]["data"]["hello"] == "Hello, world!"
    finally:
        await srv.close(2.0)


async def test_init_timeout_closes_4408() -> None:
    srv = await start_server(ws_init_timeout_s=0.2)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            code, _ = await closed_with(ws)
            assert code == 4408
    finally:
        await srv.close(2.0)


async def test_too_many_operations_per_connection() -> None:
    srv = await start_server(ws_max_subscriptions=2)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            for i in range(3):
                await subscribe(ws, str(i), "subscription { ticker { value } }")
            message = await recv(ws)
            assert message["type"] == "error" and message["id"] == "2"
            assert "too many operations" in message["payload"][0]["message"]
    finally:
        await srv.close(2.0)


async def test_server_close_sends_going_away(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        closing = asyncio.ensure_future(server.close(2.0))
        code, _ = await closed_with(ws)
        assert code == 1001
        await closing


# --- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strict", [False, True])
async def test_strict_ordering_processes_messages_one_at_a_time(strict: bool) -> None:
    srv = await start_server(ws_strict_ordering=strict)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            await subscribe(ws, "slow", "{ slow(seconds: 0.3) }")
            await subscribe(ws, "fast", "{ hello }")
            order = [(await recv(ws))["id"] for _ in range(4)]
        expected = ["slow", "slow", "fast", "fast"] if strict else ["fast", "fast", "slow", "slow"]
        assert order == expected
    finally:
        await srv.close(2.0)


async def test_transport_ws_keepalive_ping_when_enabled() -> None:
    srv = await start_server(ws_transport_ping=True, ws_keepalive_s=0.1)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            assert await recv(ws) == {"type": "ping"}
            await ws.send(json.dumps({"type": "pong"}))
            assert await recv(ws) == {"type": "ping"}
    finally:
        await srv.close(2.0)


async def test_subscription_that_fails_to_start_gets_error() -> None:
    from service.example.schema import schema as example_schema

    srv = await serve(
        example_schema, [{"protocol": "tcp", "port": 0}], run=False, settings=Settings(redis_url="")
    )
    assert isinstance(srv, Server)
    try:
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            await subscribe(ws, "c", "subscription { countdown(from: 5000) }")
            message = await recv(ws)
            assert message["type"] == "error" and message["id"] == "c"
            assert message["payload"][0]["extensions"]["code"] == "BAD_USER_INPUT"
            await subscribe(ws, "d", "subscription { countdown(from: 2) }")
            values = [(await recv(ws))["payload"]["data"]["countdown"] for _ in range(3)]
            assert values == [2, 1, 0]
            assert await recv(ws) == {"id": "d", "type": "complete"}
    finally:
        await srv.close(2.0)


async def test_upgraded_connections_leave_the_timeout_sweeper(server: Server) -> None:
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        assert server.sweeper is not None
        assert not [c for c in server.sweeper.connections if c.upgraded]
        assert any(type(c).__name__ == "NativeWebSocket" for c in server.connections)


async def test_websocket_ping_keeps_an_idle_socket_and_drops_a_dead_peer() -> None:
    import base64
    import os as _os

    srv = await start_server(ws_keepalive_s=0.1)
    try:
        # A live client (websockets answers pings itself) survives many intervals of silence.
        async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
            await init(ws)
            conn = next(c for c in srv.connections if type(c).__name__ == "NativeWebSocket")
            await apoll_until(lambda: conn.pings_sent >= 5, timeout_s=5, what="5 pings sent")
            await subscribe(ws, "h", "{ hello }")
            assert (await recv(ws))["payload"]["data"]["hello"] == "Hello, world!"
        # A peer that never answers a ping is dropped after one unanswered interval.
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.tcp_port())
        key = base64.b64encode(_os.urandom(16)).decode()
        writer.write(
            (
                "GET /graphql HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {TWS}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        received = b""
        while chunk := await asyncio.wait_for(reader.read(4096), 5):  # until the server drops us
            received += chunk
        assert b"\x89" in received  # it sent ping frames (opcode 0x9) before giving up
        writer.close()
    finally:
        await srv.close(2.0)


async def test_server_close_unwinds_subscriptions_before_returning() -> None:
    schemas.UNSUBSCRIBED.clear()
    srv = await start_server()
    async with connect(url(srv), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "s", 'subscription { ticker(group: "closing") { value } }')
        await wait_joined(Ticker.group_key("closing"))
        await srv.close(2.0)
        # The subscription's stream was closed (unsubscribed ran) before close() returned.
        assert schemas.UNSUBSCRIBED == [{"group": "closing"}]
        code, _ = await closed_with(ws)
        assert code == 1001


async def test_websocket_operations_are_timed_and_counted(server: Server) -> None:
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        server.recorder.flush()  # counts reach prometheus-client once a second, or now
        return REGISTRY.get_sample_value(name, labels) or 0.0

    count_before = sample(
        "graphql_request_duration_seconds_count", operation_type="query", operation_name="other"
    )
    ok_before = sample(
        "graphql_requests_total", transport="ws", operation_type="query", status="ok"
    )
    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "q", "{ hello }")
        assert (await recv(ws))["type"] == "next"
        assert await recv(ws) == {"id": "q", "type": "complete"}
    for _ in range(500):  # the report runs as the operation task ends
        if (
            sample("graphql_requests_total", transport="ws", operation_type="query", status="ok")
            > ok_before
        ):
            break
        await asyncio.sleep(0.01)
    assert (
        sample("graphql_requests_total", transport="ws", operation_type="query", status="ok")
        == ok_before + 1
    )
    assert (
        sample(
            "graphql_request_duration_seconds_count", operation_type="query", operation_name="other"
        )
        == count_before + 1
    )
    assert sample("graphql_inflight_operations") == 0


async def test_a_subscriber_backlog_yields_to_the_loop_between_notifications(
    server: Server,
) -> None:
    """A queued backlog must not be written in one loop step: the worker's heartbeat and every
    other connection run between notifications (else gunicorn kills a busy worker)."""
    from prometheus_client import REGISTRY

    def sent() -> float:
        server.recorder.flush()  # counts reach prometheus-client once a second, or now
        return REGISTRY.get_sample_value("graphql_subscription_notifications_sent_total") or 0.0

    async with connect(url(server), subprotocols=[TWS]) as ws:  # type: ignore[list-item]
        await init(ws)
        await subscribe(ws, "b", 'subscription { ticker(group: "backlog") { value } }')
        await wait_joined(Ticker.group_key("backlog"))
        start = sent()
        for i in range(200):
            await Ticker.broadcast(group="backlog", payload={"value": i})
        seen: list[float] = []
        while sent() < start + 200:  # a probe that only runs when the loop gets control
            seen.append(sent() - start)
            await asyncio.sleep(0)
        assert any(0 < n < 200 for n in seen)  # it ran while the backlog was being written
        got = [(await recv(ws))["payload"]["data"]["ticker"]["value"] for _ in range(200)]
        assert got == list(range(200))
