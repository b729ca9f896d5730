"""Subscription fanout through nginx: many graphql-transport-ws subscribers, N broadcasts.

Every subscriber runs ``subscription { ticker(group: G) { value } }`` (``support.schemas``) through
nginx to the workers. This process then calls ``await Ticker.broadcast(G, {"value": i})`` (a
Redis PUBLISH; ``REDIS_URL`` must be set), noting when each call started. A receipt's latency is
the time from that start to the moment its ``next`` message reached the subscriber's loop here,
on the same monotonic clock. Throughput is all notifications received divided by the time from
the first broadcast to the last receipt.

The publisher keeps at most ``window`` events in flight (broadcast but not yet received by every
subscriber): enough to keep the workers busy, few enough that the figures measure delivery
rather than an ever longer backlog. Latency therefore includes waiting behind at most
``window - 1`` earlier events.

Publisher and subscribers share one uvloop loop in this process, on the same cores as nginx,
the workers and Redis: the figures include this client's own cost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import resource
import time
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

TRANSPORT_WS = Subprotocol("graphql-transport-ws")
CONNECT_BATCH = 100
PROBE = -1  # the warm-up event's value


class FanoutError(RuntimeError):
    """The fanout did not deliver what was broadcast, or a subscriber was refused."""


@dataclasses.dataclass(frozen=True, slots=True)
class FanoutResult:
    subscribers: int
    events: int
    window: int
    delivered: int
    wall_s: float
    publish_s: float
    notifications_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def raise_nofile(target: int = 8192) -> int:
    """Raise the soft RLIMIT_NOFILE to ``target`` (capped by the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return soft


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


class Tally:
    """What the subscribers received: probes, then timed events."""

    def __init__(self, subscribers: int, events: int, window: int) -> None:
        self.subscribers = subscribers
        self.expected = subscribers * events
        self.sent_at: dict[int, float] = {}
        self.received: dict[int, int] = {}
        self.in_flight = asyncio.Semaphore(window)
        self.latencies_s: list[float] = []
        self.probes = 0
        self.last_receipt = 0.0
        self.probed = asyncio.Event()
        self.done = asyncio.Event()
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def listener_done(self, task: asyncio.Task[None]) -> None:
        """Done callback of each listener task: the first error fails the whole run."""
        if task.cancelled() or self.failed.done():
            return
        error = task.exception()
        if error is not None:
            self.failed.set_exception(error)

    def receive(self, value: int, now: float) -> None:
        if value == PROBE:
            self.probes += 1
            if self.probes == self.subscribers:
                self.probed.set()
            return
        self.latencies_s.append(now - self.sent_at[value])
        self.last_receipt = now
        count = self.received[value] = self.received.get(value, 0) + 1
        if count == self.subscribers:
            self.in_flight.release()
        if len(self.latencies_s) == self.expected:
            self.done.set()


async def _recv_json(ws: ClientConnection, timeout_s: float) -> dict[str, object]:
    message: dict[str, object] = orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))
    return message


async def subscribe(url: str, query: str) -> ClientConnection:
    """Open a graphql-transport-ws connection and start ``query`` on it as id ``1``."""
    ws = await connect(url, subprotocols=[TRANSPORT_WS], ping_interval=None, open_timeout=30)
    try:
        await ws.send(orjson.dumps({"type": "connection_init"}).decode())
        ack = await _recv_json(ws, 30)
        if ack.get("type") != "connection_ack":
            raise FanoutError(f"expected connection_ack, got {ack}")
        message = {"id": "1", "type": "subscribe", "payload": {"query": query}}
        await ws.send(orjson.dumps(message).decode())
    except BaseException:
        await ws.close()
        raise
    return ws


async def listen(ws: ClientConnection, tally: Tally, last_value: int) -> None:
    """Feed ``tally`` until this subscriber has seen ``last_value`` (events arrive in order)."""
    async for raw in ws:
        now = time.perf_counter()
        message = orjson.loads(raw)
        kind = message.get("type")
        if kind == "ping":
            await ws.send('{"type":"pong"}')
            continue
        if kind != "next":
            raise FanoutError(f"unexpected message {message}")
        value = message["payload"]["data"]["ticker"]["value"]
        tally.receive(value, now)
        if value == last_value:
            return
    raise FanoutError(f"connection closed before event {last_value}: {ws.close_code}")


async def _until(awaitable: Coroutine[Any, Any, Any], tally: Tally, timeout_s: float) -> None:
    """Await ``awaitable``; a subscriber's failure or the timeout ends the wait early."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait(
            {waiter, tally.failed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if tally.failed in done:
            raise FanoutError(f"a subscriber failed: {tally.failed.exception()!r}")
        if waiter not in done:
            raise FanoutError(f"timed out after {timeout_s:g} s waiting for deliveries")
        waiter.result()
    finally:
        waiter.cancel()


async def run_fanout(
    url: str,
    *,
    redis_url: str,
    subscribers: int,
    events: int,
    group: str,
    active_subscriptions: Callable[[], int],
    window: int = 1,
    timeout_s: float = 120.0,
) -> FanoutResult:
    """Connect ``subscribers``, wait until the workers count them all (``active_subscriptions``),
    send one untimed probe every subscriber must receive, then ``events`` timed broadcasts with
    at most ``window`` of them not yet delivered to everyone."""
    from service.broker import make_broker
    from service.subscriptions import Fanout
    from support.schemas import Ticker

    # One publishing connection for the whole run: a Fanout attached to this loop is what
    # Ticker.broadcast publishes through (without it, each broadcast would connect anew).
    publisher = Fanout(make_broker(redis_url))
    await publisher.start()
    query = f'subscription {{ ticker(group: "{group}") {{ value }} }}'
    tally = Tally(subscribers, events, window)
    clients: list[ClientConnection] = []
    tasks: set[asyncio.Task[None]] = set()
    try:
        while len(clients) < subscribers:
            batch = min(CONNECT_BATCH, subscribers - len(clients))
            clients.extend(await asyncio.gather(*(subscribe(url, query) for _ in range(batch))))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while active_subscriptions() < subscribers:
            if loop.time() > deadline:
                raise FanoutError(f"only {active_subscriptions()} of {subscribers} became active")
            await asyncio.sleep(0.05)
        for ws in clients:
            task = asyncio.create_task(listen(ws, tally, events - 1))
            task.add_done_callback(tally.listener_done)
            tasks.add(task)

        await Ticker.broadcast(group, {"value": PROBE})
        await _until(tally.probed.wait(), tally, 30)

        started = time.perf_counter()
        for value in range(events):
            await _until(tally.in_flight.acquire(), tally, timeout_s)
            tally.sent_at[value] = time.perf_counter()
            await Ticker.broadcast(group, {"value": value})
        published = time.perf_counter()
        await _until(tally.done.wait(), tally, timeout_s)
    finally:
        if tally.failed.done():
            tally.failed.exception()  # retrieved: the error is raised above or superseded
        else:
            tally.failed.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        await publisher.close()

    wall_s = tally.last_receipt - started
    ordered = sorted(tally.latencies_s)
    return FanoutResult(
        subscribers=subscribers,
        events=events,
        window=window,
        delivered=len(ordered),
        wall_s=wall_s,
        publish_s=published - started,
        notifications_per_s=len(ordered) / wall_s,
        p50_ms=percentile(ordered, 0.50) * 1000.0,
        p99_ms=percentile(ordered, 0.99) * 1000.0,
        max_ms=ordered[-1] * 1000.0,
    )
