"""The example schema's subscriptions over a real server and Postgres: noteChanged for every
note mutation, chat rooms isolated by group, countdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from service.auth import issue_token
from service.example.subscriptions import NoteChanged, OnNewChatMessage
from service.server.serve import Server
from service.settings import Settings
from service.subscriptions.fanout import attached
from support.dbutil import throwaway_database
from support.polling import apoll_until
from tests.example_util import serving

SECRET = "example-subscriptions-secret-0123456789"


@pytest.fixture
async def server() -> AsyncIterator[tuple[Server, Settings]]:
    async with throwaway_database() as db_url:
        settings = Settings(database_url=db_url, jwt_secret=SECRET, redis_url="")
        async with serving(settings) as srv:
            yield srv, settings


async def recv(ws: ClientConnection) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    return data


async def open_ws(srv: Server, token: str | None = None) -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{srv.tcp_port()}/graphql",
        subprotocols=[Subprotocol("graphql-transport-ws")],
    )
    payload = {"authToken": token} if token else {}
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    assert (await recv(ws))["type"] == "connection_ack"
    return ws


async def run(ws: ClientConnection, op_id: str, query: str) -> dict[str, Any]:
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))
    message = await recv(ws)
    assert message["type"] == "next", message
    assert await recv(ws) == {"id": op_id, "type": "complete"}
    result: dict[str, Any] = message["payload"]
    return result


async def wait_subscribed(group_key: str) -> None:
    """Poll the running loop's fanout until a local subscriber holds ``group_key``."""

    def joined() -> bool:
        fanout = attached()
        return fanout is not None and group_key in fanout.broker.groups()

    await apoll_until(joined, timeout_s=5, what=f"a subscriber joining {group_key}")


async def test_note_changed_for_create_update_delete(server: tuple[Server, Settings]) -> None:
    srv, settings = server
    token = issue_token(settings, sub="alice", name="Alice")
    watcher = await open_ws(srv)
    author = await open_ws(srv, token)
    try:
        query = "subscription { noteChanged { kind note { id title priority createdBy } } }"
        await watcher.send(
            json.dumps({"id": "w", "type": "subscribe", "payload": {"query": query}})
        )
        await wait_subscribed(NoteChanged.group_key())
        created = await run(
            author, "c", 'mutation { createNote(title: "first", priority: 3) { id } }'
        )
        note_id = created["data"]["createNote"]["id"]
        await run(
            author, "u", f'mutation {{ updateNote(id: "{note_id}", title: "second") {{ id }} }}'
        )
        await run(author, "d", f'mutation {{ deleteNote(id: "{note_id}") }}')
        events = [(await recv(watcher))["payload"]["data"]["noteChanged"] for _ in range(3)]
        assert [e["kind"] for e in events] == ["CREATED", "UPDATED", "DELETED"]
        assert events[0]["note"] == {
            "id": note_id,
            "title": "first",
            "priority": 3,
            "createdBy": "alice",
        }
        assert events[1]["note"]["title"] == "second"
        assert events[2]["note"]["id"] == note_id
    finally:
        await watcher.close()
        await author.close()


async def test_chat_rooms_are_isolated(server: tuple[Server, Settings]) -> None:
    srv, _ = server
    lobby, kitchen, sender = await open_ws(srv), await open_ws(srv), await open_ws(srv)
    try:
        for ws, room in ((lobby, "lobby"), (kitchen, "kitchen")):
            fields = "chatroom text sender"
            query = f'subscription {{ onNewChatMessage(chatroom: "{room}") {{ {fields} }} }}'
            await ws.send(
                json.dumps({"id": room, "type": "subscribe", "payload": {"query": query}})
            )
            await wait_subscribed(OnNewChatMessage.group_key(room))
        await run(
            sender, "1", 'mutation { sendChatMessage(chatroom: "lobby", text: "hi lobby") { id } }'
        )
        await run(
            sender,
            "2",
            'mutation { sendChatMessage(chatroom: "kitchen", text: "hi kitchen") { id } }',
        )
        got_lobby = (await recv(lobby))["payload"]["data"]["onNewChatMessage"]
        got_kitchen = (await recv(kitchen))["payload"]["data"]["onNewChatMessage"]
        assert got_lobby == {"chatroom": "lobby", "text": "hi lobby", "sender": "Anonymous"}
        assert got_kitchen == {"chatroom": "kitchen", "text": "hi kitchen", "sender": "Anonymous"}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(lobby.recv(), 0.3)
        history = await run(sender, "h", '{ history(chatroom: "lobby") { text } }')
        assert history["data"]["history"] == [{"text": "hi lobby"}]
    finally:
        for ws in (lobby, kitchen, sender):
            await ws.close()


async def test_countdown_over_legacy_protocol(server: tuple[Server, Settings]) -> None:
    srv, _ = server
    async with connect(
        f"ws://127.0.0.1:{srv.tcp_port()}/graphql", subprotocols=[Subprotocol("graphql-ws")]
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert (await recv(ws))["type"] == "connection_ack"
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "start",
                    "payload": {"query": "subscription { countdown(from: 3) }"},
                }
            )
        )
        values: list[int] = []
        async with asyncio.timeout(20):  # four values (keep-alives between), then complete
            while len(values) < 4:
                message = await recv(ws)
                if message["type"] == "data":
                    values.append(message["payload"]["data"]["countdown"])
            assert values == [3, 2, 1, 0]
            message = await recv(ws)
            while message["type"] == "ka":
                message = await recv(ws)
        assert message == {"id": "1", "type": "complete"}
