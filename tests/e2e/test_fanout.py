"""Subscriptions across workers: real gunicorn workers, real Redis pub/sub, real nginx."""

from __future__ import annotations

import asyncio
import json
import os
import resource
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect, unix_connect

from support.polling import apoll_until
from support.stack import Stack, running_stack

pytestmark = pytest.mark.timeout(180)

TWS = "graphql-transport-ws"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(workers=2, app="support.schemas:schema") as s:
        yield s


async def recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return data


async def start(ws: ClientConnection, query: str, op_id: str = "1") -> None:
    await ws.send(json.dumps({"type": "connection_init"}))
    assert (await recv(ws))["type"] == "connection_ack"
    await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": query}}))


def group_subscribers(channel: str) -> int:
    """Redis subscriber count of a group's channel (how many workers joined it)."""
    import redis

    client = redis.Redis.from_url(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        counts = dict(client.pubsub_numsub(channel))
    finally:
        client.close()
    return int(counts.get(channel.encode(), 0))


def channel_of(group: str) -> str:
    from support.schemas import Ticker

    return "graphql-service:" + Ticker.group_key(group)


async def wait_workers_joined(group: str, workers: int) -> None:
    await apoll_until(
        lambda: group_subscribers(channel_of(group)) >= workers,
        timeout_s=20,
        what=f"{workers} worker(s) joining {group}",
    )


def tick(stack: Stack, slot: int, value: int, group: str) -> None:
    from support.stack import request

    conn = stack.slot(slot)
    try:
        status, _, body = request(
            conn,
            "POST",
            "/graphql",
            {"query": f'mutation {{ tick(value: {value}, group: "{group}") }}'},
        )
    finally:
        conn.close()
    assert status == 200 and "errors" not in json.loads(body), body


async def test_event_from_worker1_reaches_subscriber_on_worker0(stack: Stack) -> None:
    path0 = stack.settings.slot_path(0)
    async with unix_connect(path0, "ws://localhost/graphql", subprotocols=[TWS]) as ws:
        await start(ws, 'subscription { ticker(group: "x-worker") { value } }')
        await wait_workers_joined("x-worker", 1)
        await asyncio.to_thread(tick, stack, 1, 42, "x-worker")
        message = await recv(ws)
        assert message["payload"] == {"data": {"ticker": {"value": 42}}}
        assert stack.health_of(0)["pid"] != stack.health_of(1)["pid"]


async def test_event_reaches_subscribers_through_nginx(stack: Stack) -> None:
    url = f"ws://127.0.0.1:{stack.port}/graphql"
    async with (
        connect(url, subprotocols=[TWS]) as a,  # type: ignore[list-item]
        connect(url, subprotocols=["graphql-ws"]) as b,  # type: ignore[list-item]
    ):
        await start(a, 'subscription { ticker(group: "via-nginx") { value } }')
        await b.send(json.dumps({"type": "connection_init"}))
        assert (await recv(b))["type"] == "connection_ack"
        await b.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "start",
                    "payload": {"query": 'subscription { ticker(group: "via-nginx") { value } }'},
                }
            )
        )
        await wait_workers_joined("via-nginx", 1)
        await asyncio.to_thread(tick, stack, 0, 7, "via-nginx")
        assert (await recv(a))["payload"]["data"]["ticker"]["value"] == 7
        async with asyncio.timeout(10):  # keep-alives may come first, but not forever
            legacy = await recv(b)
            while legacy["type"] == "ka":
                legacy = await recv(b)
        assert legacy["type"] == "data" and legacy["payload"]["data"]["ticker"]["value"] == 7


async def test_thousand_subscribers_receive_fifty_broadcasts_in_order(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", stack.env["REDIS_URL"])  # broadcast from this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    url = f"ws://127.0.0.1:{stack.port}/graphql"
    n_subscribers, n_events = 1000, 50
    clients: list[ClientConnection] = []
    try:
        for batch in range(0, n_subscribers, 100):
            conns = await asyncio.gather(
                *(connect(url, subprotocols=[TWS], max_queue=None) for _ in range(100))  # type: ignore[list-item]
            )
            clients.extend(conns)
            await asyncio.gather(
                *(start(ws, 'subscription { ticker(group: "load") { value } }') for ws in conns)
            )
            del batch
        await wait_workers_joined("load", 2)
        # Every subscriber's stream has joined once its worker counts it in the gauge.
        await apoll_until(
            lambda: _active_subscriptions(stack) >= n_subscribers,
            timeout_s=30,
            interval_s=0.05,
            what=f"all {n_subscribers} subscriptions active",
        )
        from support.schemas import Ticker

        for i in range(n_events):
            await asyncio.to_thread(Ticker.broadcast, "load", {"value": i})

        async def collect(ws: ClientConnection) -> list[int]:
            return [
                (await recv(ws, 60))["payload"]["data"]["ticker"]["value"] for _ in range(n_events)
            ]

        results = await asyncio.wait_for(asyncio.gather(*(collect(ws) for ws in clients)), 120)
        expected = list(range(n_events))
        assert all(r == expected for r in results)
        assert len(results) == n_subscribers
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


def _active_subscriptions(stack: Stack) -> int:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=stack.metrics_dir)
    return int(registry.get_sample_value("graphql_active_subscriptions") or 0)
