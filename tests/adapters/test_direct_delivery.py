"""Direct delivery of subscription events: the broker's one dispatch pass of an event writes
every waiting subscriber's frame itself (no task switch, no ``await`` per subscriber); a
subscriber whose socket cannot take bytes falls back to its queue, in order.

Real pieces throughout (the engine, the in-memory broker and its dispatch, the native WebSocket
adapter, websockets' client protocol to read the frames); only the socket is a fake transport,
so the test can see what was written before the event loop ran anything else."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from service.broker import codec
from service.broker.memory import MemoryBroker
from service.engine.executor import Engine
from service.engine.http import HTTPRequest
from service.server.ws_native import NativeWebSocket
from service.server.ws_session import ConnectApp
from service.settings import Settings
from service.subscriptions import Fanout
from support.polling import apoll_until
from support.schemas import Shared, Unshared, schema
from tests.adapters.fakes import FakeTransport

pytestmark = pytest.mark.timeout(30)


class FakeHTTP:
    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.connections: set[Any] = set()


class Subscriber:
    """One client: a fake socket, websockets' client protocol reading what the server wrote."""

    def __init__(self, app: ConnectApp, index: int) -> None:
        self.client = ClientProtocol(
            parse_uri("ws://test/graphql"),
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        )
        handshake = self.client.connect()
        headers = {name.lower(): value for name, value in handshake.headers.raw_items()}
        request = HTTPRequest("GET", "/graphql", "", headers, b"", "test", f"req-{index}")
        self.transport = FakeTransport(high_water=65_536)
        self.ws = NativeWebSocket(app, FakeHTTP(self.transport), request, "/graphql")
        self.transport.protocol = self.ws
        self.ws.start(b"")
        self.client.receive_data(self.transport.take())
        assert self.client.events_received()[0].status_code == 101  # type: ignore[union-attr]

    def send(self, message: dict[str, Any]) -> None:
        self.client.send_text(json.dumps(message).encode())
        self.ws.data_received(b"".join(self.client.data_to_send()))

    def received(self) -> list[dict[str, Any]]:
        """The messages written to this socket since the last call."""
        self.client.receive_data(self.transport.take())
        return [
            json.loads(bytes(event.data))
            for event in self.client.events_received()
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT
        ]


@pytest.fixture
async def app() -> AsyncIterator[tuple[ConnectApp, MemoryBroker]]:
    settings = Settings(redis_url="", ws_keepalive_s=0, confirm_subscriptions=True)
    broker = MemoryBroker()
    fanout = Fanout(broker)
    await fanout.start()
    try:
        yield ConnectApp(Engine(schema, settings), settings), broker
    finally:
        await fanout.close()


async def subscribed(app: ConnectApp, count: int, field: str) -> list[Subscriber]:
    subscribers = [Subscriber(app, i) for i in range(count)]
    query = f"subscription {{ {field} {{ value }} }}"
    for message, expected in (
        ({"type": "connection_init"}, {"type": "connection_ack"}),
        (
            {"type": "subscribe", "id": "s", "payload": {"query": query}},
            {"type": "next", "id": "s", "payload": {"data": None}},  # joined its groups
        ),
    ):
        for sub in subscribers:
            sub.send(message)
        got: dict[int, list[dict[str, Any]]] = {i: [] for i in range(count)}

        def answered(got: dict[int, list[dict[str, Any]]] = got) -> bool:
            for i, sub in enumerate(subscribers):
                got[i] += sub.received()
            return all(got.values())

        await apoll_until(answered, timeout_s=10, what=f"the answers to {message['type']}")
        assert all(messages == [expected] for messages in got.values()), got
    return subscribers


def dispatch(broker: MemoryBroker, cls: type[Shared], payload: Any) -> None:
    """The broker's dispatch pass of ``cls.broadcast(payload=payload)``, run synchronously."""
    channel, message = cls.event(None, payload)
    broker._deliver(codec.encode_envelope(channel, message, time.time()))


def next_values(messages: list[dict[str, Any]], field: str) -> list[int]:
    assert all(m["type"] == "next" and m["id"] == "s" for m in messages), messages
    return [m["payload"]["data"][field]["value"] for m in messages]


@pytest.mark.parametrize("cls,field", [(Shared, "shared"), (Unshared, "unshared")])
async def test_one_dispatch_pass_writes_every_subscribers_frame(
    app: tuple[ConnectApp, MemoryBroker], cls: type[Shared], field: str
) -> None:
    connect_app, broker = app
    subscribers = await subscribed(connect_app, 5, field)
    for value in range(3):
        dispatch(broker, cls, {"item": {"value": value}})
        # No await since the dispatch: every frame was written inside it.
        for sub in subscribers:
            assert next_values(sub.received(), field) == [value]


async def test_a_socket_that_cannot_take_bytes_falls_back_to_its_queue_in_order(
    app: tuple[ConnectApp, MemoryBroker],
) -> None:
    connect_app, broker = app
    fast, slow = await subscribed(connect_app, 2, "shared")
    dispatch(broker, Shared, {"item": {"value": 0}})
    slow.ws.pause_writing()
    for value in (1, 2, 3):
        dispatch(broker, Shared, {"item": {"value": value}})
    assert next_values(fast.received(), "shared") == [0, 1, 2, 3]
    assert next_values(slow.received(), "shared") == [0]  # held back while not writable
    slow.ws.resume_writing()
    dispatch(broker, Shared, {"item": {"value": 4}})  # queued behind the held-back ones
    got: list[int] = []

    def caught_up() -> bool:
        got.extend(next_values(slow.received(), "shared"))
        return got[-1:] == [4]

    await apoll_until(caught_up, timeout_s=10, what="the queued notifications")
    assert got == [1, 2, 3, 4]
    assert next_values(fast.received(), "shared") == [4]
