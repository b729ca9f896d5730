"""The example schema's subscriptions (tests/server/test_example_subscriptions.py's scenarios)
written on ``service.testing.TestClient``: the same HTTP core and WebSocket session as the
workers, with real Postgres and the transactional outbox's relay, but no sockets. Plus the
client on the Redis broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import service.example.schema
from service.db import Database
from service.db.outbox import OutboxRelay
from service.settings import Settings
from service.subscriptions import fanout as fanouts
from service.testing import TestClient
from support.dbutil import throwaway_database
from support.schemas import Ticker
from support.schemas import schema as ticker_schema
from support.stack import REDIS_URL

SECRET = "example-on-testclient-secret-0123456789"
NOTE_CHANGED = "subscription { noteChanged { kind note { id title priority createdBy } } }"


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    """The example schema as a worker serves it: a ``Database`` in every context and the
    outbox relay publishing committed events through the client's fanout."""
    async with throwaway_database() as db_url:
        settings = Settings(database_url=db_url, jwt_secret=SECRET)
        database = Database(settings)
        relay = OutboxRelay(database, fanouts.publish)
        async with TestClient(
            service.example.schema.schema,
            settings,
            database=database,
            on_start=[relay.start],
            on_close=[relay.close, database.close],
        ) as test_client:
            yield test_client


async def test_note_changed_for_create_update_delete(client: TestClient) -> None:
    alice = client.auth_headers("alice", name="Alice")
    async with client.subscribe(NOTE_CHANGED) as watcher:
        created = await client.query(
            'mutation { createNote(title: "first", priority: 3) { id } }', headers=alice
        )
        note_id = created.data["createNote"]["id"]
        await client.query(
            f'mutation {{ updateNote(id: "{note_id}", title: "second") {{ id }} }}', headers=alice
        )
        await client.query(f'mutation {{ deleteNote(id: "{note_id}") }}', headers=alice)
        events = [(await watcher.next())["data"]["noteChanged"] for _ in range(3)]
    assert [e["kind"] for e in events] == ["CREATED", "UPDATED", "DELETED"]
    assert events[0]["note"] == {
        "id": note_id,
        "title": "first",
        "priority": 3,
        "createdBy": "alice",
    }
    assert events[1]["note"]["title"] == "second"
    assert events[2]["note"]["id"] == note_id


async def test_creating_a_note_needs_a_user(client: TestClient) -> None:
    async with client.subscribe(NOTE_CHANGED) as watcher:
        refused = await client.query('mutation { createNote(title: "x") { id } }')
        assert refused.status == 200
        assert refused.errors is not None
        assert refused.errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
        await watcher.assert_no_messages(timeout_s=0.2)


async def test_chat_rooms_are_isolated(client: TestClient) -> None:
    fields = "chatroom text sender"
    lobby = client.subscribe(
        f'subscription {{ onNewChatMessage(chatroom: "lobby") {{ {fields} }} }}'
    )
    kitchen = client.subscribe(
        f'subscription {{ onNewChatMessage(chatroom: "kitchen") {{ {fields} }} }}'
    )
    async with lobby, kitchen:
        for room in ("lobby", "kitchen"):
            sent = await client.query(
                f'mutation {{ sendChatMessage(chatroom: "{room}", text: "hi {room}") {{ id }} }}'
            )
            assert sent.errors is None
        assert await lobby.next() == {
            "data": {
                "onNewChatMessage": {"chatroom": "lobby", "text": "hi lobby", "sender": "Anonymous"}
            }
        }
        assert (await kitchen.next())["data"]["onNewChatMessage"]["text"] == "hi kitchen"
        await lobby.assert_no_messages(timeout_s=0.3)
    history = await client.query('{ history(chatroom: "lobby") { text } }')
    assert history.data == {"history": [{"text": "hi lobby"}]}


async def test_identified_senders_skip_their_own_messages(client: TestClient) -> None:
    bob = {"Authorization": f"Bearer {client.token('bob')}"}
    query = 'subscription { onNewChatMessage(chatroom: "den") { text sender } }'
    async with (
        client.subscribe(query, connection_params=bob) as own,
        client.subscribe(query) as other,
    ):
        await client.query(
            'mutation { sendChatMessage(chatroom: "den", text: "mine") { id } }', headers=bob
        )
        assert await other.next() == {
            "data": {"onNewChatMessage": {"text": "mine", "sender": "bob"}}
        }
        await own.assert_no_messages(timeout_s=0.2)


@pytest.mark.parametrize("subprotocol", ["graphql-transport-ws", "graphql-ws"])
async def test_countdown_in_both_subprotocols(client: TestClient, subprotocol: str) -> None:
    stream = client.subscribe("subscription { countdown(from: 3) }", subprotocol=subprotocol)
    assert [p["data"]["countdown"] async for p in stream] == [3, 2, 1, 0]


async def test_the_client_on_redis() -> None:
    """``broker="redis"``: the events go through a real Redis (a channel prefix of the
    client's own), still delivered to the client's subscribers."""
    settings = Settings(redis_url=REDIS_URL)
    query = 'subscription { ticker(group: "r") { value } }'
    async with (
        TestClient(ticker_schema, settings, broker="redis") as client,
        client.subscribe(query) as sub,
    ):
        ticked = await client.query('mutation { tick(value: 5, group: "r") }')
        assert ticked.data == {"tick": 1}  # one worker (this client) has subscribers
        assert await sub.next() == {"data": {"ticker": {"value": 5}}}
        await sub.assert_no_messages(timeout_s=0.1)
        await Ticker.unsubscribe(group="r")
        assert [p async for p in sub] == []
