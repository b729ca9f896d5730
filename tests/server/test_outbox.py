"""The transactional outbox: a committed mutation's event reaches subscribers even when Redis is
down when it commits; a rolled-back change announces nothing; an event published twice (a relay
that died between publishing and deleting it) arrives once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from service.auth import issue_token
from service.db import Database, outbox
from service.server.serve import serve
from service.settings import Settings
from service.subscriptions import fanout as fanouts
from support.dbutil import throwaway_database
from support.polling import apoll_until
from support.redisutil import OwnRedis
from support.schemas import Ticker, schema
from support.stack import free_port
from tests.example_util import serving

pytestmark = pytest.mark.timeout(90)

SECRET = "s" * 32
TWS: Any = ["graphql-transport-ws"]
SEND = 'mutation { sendChatMessage(chatroom: "outbox", text: "%s") { id text } }'


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    redis_server = OwnRedis(free_port(), tmp_path)
    await redis_server.start()
    try:
        yield redis_server
    finally:
        await redis_server.stop()


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return message


async def test_a_mutation_committed_while_redis_is_down_is_announced_once_it_is_back(
    own_redis: OwnRedis,
) -> None:
    async with throwaway_database() as url:
        settings = Settings(database_url=url, redis_url=own_redis.url, jwt_secret=SECRET)
        async with serving(settings, retry_max_s=0.2) as srv, Database(settings) as database:
            port = srv.tcp_port()
            ws = await connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=TWS)
            await ws.send(json.dumps({"type": "connection_init"}))
            assert (await recv(ws))["type"] == "connection_ack"
            query = 'subscription { onNewChatMessage(chatroom: "outbox") { text } }'
            await ws.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": query}}))
            await apoll_until(
                lambda: any("outbox" in g for g in srv.fanout.broker.groups()),
                timeout_s=10,
                what="the subscription's join",
            )
            token = issue_token(settings, sub="bob", ttl_s=600)
            await own_redis.stop()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            body = json.dumps({"query": SEND % "while redis was down"}).encode()
            writer.write(
                b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            answer = json.loads(await reader.readexactly(length))
            writer.close()
            assert head.startswith(b"HTTP/1.1 200"), head
            assert answer["data"]["sendChatMessage"]["text"] == "while redis was down", answer
            pending = await database.fetchone("SELECT count(*) FROM event_outbox")
            assert pending == (1,), "the event waits in the outbox"
            await own_redis.start()
            event = await recv(ws)
            assert event["payload"]["data"]["onNewChatMessage"]["text"] == "while redis was down"
            await apoll_until(
                lambda: _outbox_empty(database), timeout_s=10, what="the outbox emptied"
            )
            await ws.close()


async def _outbox_empty(database: Database) -> bool:
    return await database.fetchone("SELECT count(*) FROM event_outbox") == (0,)


async def test_a_rolled_back_change_announces_nothing() -> None:
    async with throwaway_database() as url:
        database = Database(Settings(database_url=url))
        try:
            with pytest.raises(RuntimeError, match="changed my mind"):
                async with database.transaction() as tx:
                    await outbox.append(tx, *Ticker.event("g", {"value": 1}))
                    raise RuntimeError("changed my mind")
            assert await _outbox_empty(database)
        finally:
            await database.close()


async def test_an_event_published_twice_arrives_once() -> None:
    srv = await serve(
        schema, [{"protocol": "tcp", "port": 0}], run=False, settings=Settings(redis_url="")
    )
    try:
        ws = await connect(
            f"ws://127.0.0.1:{srv.tcp_port()}/graphql",
            subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        )
        await ws.send(json.dumps({"type": "connection_init"}))
        assert (await recv(ws))["type"] == "connection_ack"
        query = 'subscription { ticker(group: "twice") { value } }'
        await ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": {"query": query}}))
        await apoll_until(
            lambda: Ticker.group_key("twice") in srv.fanout.broker.groups(),
            timeout_s=5,
            what="the join",
        )
        channel, message = Ticker.event("twice", {"value": 1})
        for _ in range(2):  # the relay retried after publishing
            await fanouts.publish(channel, {**message, "e": "event-1"})
        await fanouts.publish(channel, {**Ticker.event("twice", {"value": 2})[1], "e": "event-2"})
        values = [(await recv(ws))["payload"]["data"]["ticker"]["value"] for _ in range(2)]
        assert values == [1, 2]
        await ws.close()
    finally:
        await srv.close(2.0)
