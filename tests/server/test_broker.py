"""The fanout brokers against real Redis: delivery, order, isolation, counting, codec, restarts.

Every test uses its own random channel prefix, so tests never see each other's traffic. Nothing
sleeps to wait for an outcome: tests await queues with deadlines or poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
import threading
import time
import uuid
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from service.broker import (
    Broker,
    BrokerUnavailable,
    MemoryBroker,
    RedisBroker,
    codec,
    make_broker,
    publish_sync,
)
from service.broker import redis as broker_redis
from service.broker.redis import redact_url
from support.polling import apoll_until
from support.redisutil import OwnRedis

pytestmark = pytest.mark.timeout(30)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def fresh_prefix() -> str:
    return f"test-broker-{secrets.token_hex(6)}:"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Inbox:
    """A callback that queues what it receives."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any, float]] = asyncio.Queue()

    def __call__(self, group: str, payload: Any, sent_at: float) -> None:
        self.queue.put_nowait((group, payload, sent_at))

    async def get(self, timeout_s: float = 5.0) -> tuple[str, Any, float]:
        return await asyncio.wait_for(self.queue.get(), timeout_s)

    async def payload(self, timeout_s: float = 5.0) -> Any:
        return (await self.get(timeout_s))[1]


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Broker]:
    instance: Broker
    if request.param == "memory":
        instance = MemoryBroker()
    else:
        instance = RedisBroker(REDIS_URL, channel_prefix=fresh_prefix())
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


async def numsub(client: redis.asyncio.Redis, channel: str) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return int(count)


# -- both backends -------------------------------------------------------------------------


async def test_join_publish_deliver(broker: Broker) -> None:
    inbox = Inbox()
    await broker.join("greetings", inbox)
    assert broker.groups() == frozenset({"greetings"})
    before = time.time()
    assert await broker.publish("greetings", {"hello": "world"}) == 1
    if isinstance(broker, MemoryBroker):
        assert inbox.queue.empty(), "delivery must not happen inside publish"
    group, payload, sent_at = await inbox.get()
    assert (group, payload) == ("greetings", {"hello": "world"})
    assert before <= sent_at <= time.time()


async def test_publish_order_is_preserved(broker: Broker) -> None:
    inbox = Inbox()
    await broker.join("ordered", inbox)
    for n in range(200):
        await broker.publish("ordered", n)
    assert [await inbox.payload() for _ in range(200)] == list(range(200))


async def test_concurrent_publishes_arrive_in_call_order(broker: Broker) -> None:
    inbox = Inbox()
    await broker.join("burst", inbox)
    counts = await asyncio.gather(*(broker.publish("burst", n) for n in range(300)))
    assert counts == [1] * 300
    assert [await inbox.payload() for _ in range(300)] == list(range(300))


async def test_groups_are_isolated(broker: Broker) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    await broker.join("a", inbox_a)
    await broker.join("b", inbox_b)
    await broker.publish("a", "for a")
    await broker.publish("b", "for b")
    # "for a" was published first: had it reached b, it would be ahead of "for b".
    assert await inbox_b.get() == ("b", "for b", pytest.approx(time.time(), abs=5))
    assert await inbox_a.payload() == "for a"
    assert inbox_a.queue.empty()
    assert inbox_b.queue.empty()
    assert await broker.publish("nobody-listens", "x") == 0


async def test_reference_counting(broker: Broker, redis_client: redis.asyncio.Redis) -> None:
    channel = f"{broker.channel_prefix}room" if isinstance(broker, RedisBroker) else None
    one, two = Inbox(), Inbox()
    await broker.join("room", one)
    await broker.join("room", two)
    if channel is not None:
        assert await numsub(redis_client, channel) == 1  # one connection for both callbacks
    await broker.publish("room", "m1")
    assert await one.payload() == "m1"
    assert await two.payload() == "m1"

    await broker.leave("room", one)
    assert broker.groups() == frozenset({"room"})
    await broker.publish("room", "m2")
    assert await two.payload() == "m2"
    assert one.queue.empty()  # same dispatch as two's: it would be queued by now
    if channel is not None:
        assert await numsub(redis_client, channel) == 1

    await broker.leave("room", two)
    assert broker.groups() == frozenset()
    if channel is not None:
        await apoll_until(
            lambda: _is_zero(numsub(redis_client, channel)),
            timeout_s=10,
            what="NUMSUB dropping to 0",
        )
    assert await broker.publish("room", "m3") == 0
    await broker.leave("room", two)  # nothing left to undo: a no-op


async def _is_zero(count: Awaitable[int]) -> bool:
    return await count == 0


async def test_same_callback_joined_twice_is_counted_twice(broker: Broker) -> None:
    inbox = Inbox()
    await broker.join("twice", inbox)
    await broker.join("twice", inbox)
    await broker.publish("twice", 1)
    assert [await inbox.payload(), await inbox.payload()] == [1, 1]
    await broker.leave("twice", inbox)
    assert broker.groups() == frozenset({"twice"})
    await broker.publish("twice", 2)
    await broker.publish("twice", 3)
    assert [await inbox.payload(), await inbox.payload()] == [2, 3]


PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def rich_payload() -> dict[Any, Any]:
    return {
        "aware_utc": dt.datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        "aware_zone": dt.datetime(2024, 7, 14, 12, 0, tzinfo=PARIS),
        "ambiguous": dt.datetime(2021, 11, 7, 1, 30, fold=1, tzinfo=NEW_YORK),
        "odd_offset": dt.datetime(
            2000, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30, microseconds=-7))
        ),
        "naive": dt.datetime(1999, 12, 31, 23, 59, 58, 123_456),
        "date": dt.date(1, 1, 1),
        "time": dt.time(8, 30, 0, 5, tzinfo=dt.UTC),
        "delta": dt.timedelta(days=-2, seconds=5, microseconds=1),
        "price": Decimal("19.90"),
        "tiny": Decimal("-1.000E-30"),
        "negative_zero": Decimal("-0"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "blob": b"\x00\xff",
        "nested": {"list": [1, 2.5, None, True, False, "s", {"deep": [dt.date(2020, 1, 2)]}]},
        "tuple": (1, "two", Decimal("3")),
        7: "int key",
    }


def assert_rich_payload(received: Any) -> None:
    expected = rich_payload()
    expected["tuple"] = [1, "two", Decimal("3")]
    assert received == expected
    assert received["aware_zone"].tzinfo is PARIS
    assert received["ambiguous"].fold == 1
    assert received["ambiguous"].utcoffset() == expected["ambiguous"].utcoffset()
    assert received["odd_offset"].utcoffset() == expected["odd_offset"].utcoffset()
    assert received["naive"].tzinfo is None
    assert type(received["date"]) is dt.date
    for key in ("price", "tiny", "negative_zero"):
        assert received[key].as_tuple() == expected[key].as_tuple(), key
    assert isinstance(received["id"], uuid.UUID)


async def test_codec_round_trip_through_the_broker(broker: Broker) -> None:
    inbox = Inbox()
    await broker.join("rich", inbox)
    await broker.publish("rich", rich_payload())
    assert_rich_payload(await inbox.payload())


async def test_unsupported_type_raises_at_publish(broker: Broker) -> None:
    with pytest.raises(TypeError, match=r"builtins\.object"):
        await broker.publish("g", {"x": [object()]})
    with pytest.raises(TypeError, match=r"builtins\.set"):
        await broker.publish("g", {1, 2})


async def test_failing_callback_does_not_stop_delivery(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(group: str, payload: Any, sent_at: float) -> None:
        raise RuntimeError("subscriber bug")

    inbox = Inbox()
    await broker.join("g", explode)
    await broker.join("g", inbox)
    with caplog.at_level(logging.ERROR, logger="service.broker"):
        await broker.publish("g", 1)
        await broker.publish("g", 2)
        assert [await inbox.payload(), await inbox.payload()] == [1, 2]
    assert any("subscriber bug" in (record.exc_text or "") for record in caplog.records)


async def test_closed_broker_refuses_to_publish(broker: Broker) -> None:
    await broker.close()
    await broker.close()  # idempotent
    with pytest.raises(BrokerUnavailable):
        await broker.publish("g", 1)


async def test_cancelled_publish_does_not_disturb_the_others() -> None:
    broker = RedisBroker(REDIS_URL, channel_prefix=fresh_prefix())
    await broker.start()
    try:
        inbox = Inbox()
        await broker.join("g", inbox)
        first = asyncio.create_task(broker.publish("g", "first"))
        cancelled = asyncio.create_task(broker.publish("g", "cancelled"))
        await asyncio.sleep(0)
        cancelled.cancel()
        assert await broker.publish("g", "last") == 1
        assert await first == 1
        received = [await inbox.payload(), await inbox.payload()]
        assert received[0] == "first"
        assert received[-1] in {"cancelled", "last"}  # "cancelled" may already have been sent
        while received[-1] != "last":
            received.append(await inbox.payload())
    finally:
        await broker.close()


# -- codec ---------------------------------------------------------------------------------


def test_codec_envelope_round_trip() -> None:
    data = codec.encode_envelope("grp", rich_payload(), 1_700_000_000.25)
    event = codec.decode_envelope(data)
    assert (event.group, event.sent_at) == ("grp", 1_700_000_000.25)
    assert_rich_payload(event.payload)


def test_codec_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        codec.decode_envelope(b"\xc1")
    with pytest.raises(ValueError):
        codec.decode_envelope(codec.dumps([1, 2]))


def test_codec_zone_unknown_to_the_receiver_falls_back_to_the_offset() -> None:
    body = codec.msgpack.packb([2024, 1, 1, 12, 0, 0, 0, 0, ["No/Such_Zone", 3_600_000_000]])
    data = codec.msgpack.packb(codec.msgpack.ExtType(codec.EXT_DATETIME, body))
    value = codec.loads(data)
    assert value == dt.datetime(2024, 1, 1, 11, 0, tzinfo=dt.UTC)
    assert value.utcoffset() == dt.timedelta(hours=1)


# -- make_broker ---------------------------------------------------------------------------


def test_make_broker(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="service.broker"):
        assert isinstance(make_broker(None), MemoryBroker)
        assert isinstance(make_broker(""), MemoryBroker)
    assert "in-memory broker: events do not cross processes" in caplog.text
    redis_broker = make_broker(REDIS_URL, channel_prefix="p:")
    assert isinstance(redis_broker, RedisBroker)
    assert redis_broker.channel_prefix == "p:"


def test_redact_url() -> None:
    assert redact_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


# -- Redis across processes ----------------------------------------------------------------


async def test_two_brokers_fan_out_to_each_other() -> None:
    prefix = fresh_prefix()
    first = RedisBroker(REDIS_URL, channel_prefix=prefix)
    second = RedisBroker(REDIS_URL, channel_prefix=prefix)
    await first.start()
    await second.start()
    try:
        inbox_second = Inbox()
        await second.join("news", inbox_second)
        assert await first.publish("news", {"n": 1}) == 1
        assert await inbox_second.get() == ("news", {"n": 1}, pytest.approx(time.time(), abs=5))

        inbox_first = Inbox()
        await first.join("news", inbox_first)
        assert await second.publish("news", {"n": 2}) == 2
        assert await inbox_first.payload() == {"n": 2}
        assert await inbox_second.payload() == {"n": 2}
    finally:
        await first.close()
        await second.close()


async def test_publish_sync_from_a_thread_reaches_an_async_broker() -> None:
    prefix = fresh_prefix()
    broker = RedisBroker(REDIS_URL, channel_prefix=prefix)
    await broker.start()
    try:
        inbox = Inbox()
        await broker.join("jobs", inbox)
        outcome: dict[str, Any] = {}

        def worker() -> None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                outcome["loop"] = None
            outcome["count"] = publish_sync(
                REDIS_URL, "jobs", {"done": Decimal("1.50")}, channel_prefix=prefix
            )

        thread = threading.Thread(target=worker)
        thread.start()
        group, payload, _ = await inbox.get()
        await asyncio.to_thread(thread.join, 5)
        assert outcome == {"loop": None, "count": 1}
        assert (group, payload) == ("jobs", {"done": Decimal("1.50")})
    finally:
        await broker.close()


def test_publish_sync_raises_when_redis_is_down() -> None:
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    with pytest.raises(TypeError):
        publish_sync(url, "g", object())  # checked before any connection
    with pytest.raises(BrokerUnavailable, match="cannot publish to Redis at") as info:
        publish_sync(url, "g", 1)
    assert "secret" not in str(info.value)


async def test_broker_with_redis_down_from_the_start() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    broker = RedisBroker(url, channel_prefix=fresh_prefix())
    async with asyncio.timeout(5):
        await broker.start()
        await broker.join("g", Inbox())  # registers locally, returns at once
        assert broker.groups() == frozenset({"g"})
        with pytest.raises(BrokerUnavailable, match=f"cannot publish to Redis at {url}: "):
            await broker.publish("g", 1)
        await broker.close()


# -- Redis restart -------------------------------------------------------------------------


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(free_port(), tmp_path)
    try:
        yield server
    finally:
        await server.stop()


async def test_reconnects_and_resubscribes_after_redis_restart(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.broker")
    await own_redis.start()
    prefix = fresh_prefix()
    gaps: list[float] = []
    broker = RedisBroker(own_redis.url, channel_prefix=prefix, on_reconnect=gaps.append)
    await broker.start()
    try:
        room = Inbox()
        await broker.join("room", room)
        assert await broker.publish("room", "before") == 1
        assert await room.payload() == "before"

        await own_redis.stop()
        with pytest.raises(BrokerUnavailable, match=f"cannot publish to Redis at {own_redis.url}"):
            async with asyncio.timeout(10):
                await broker.publish("room", "lost")

        late = Inbox()
        async with asyncio.timeout(10):
            await broker.join("late", late)  # while down: local only, returns at once
        assert broker.groups() == frozenset({"room", "late"})

        await own_redis.start()
        # Another client publishes until the original broker receives: it reconnected and
        # resubscribed on its own.
        await publish_until_received(own_redis.url, prefix, "room", room)
        await apoll_until(_length_is(gaps, 1), timeout_s=10, what="on_reconnect being called")
        assert gaps[0] > 0
        assert any("reconnected to Redis" in r.getMessage() for r in caplog.records)

        # The original broker publishes again, and the group joined during the gap is live.
        assert await broker.publish("room", "again") == 1
        while (payload := await room.payload()) != "again":
            assert payload.startswith("ping-")
        assert await broker.publish("late", "hello late") == 1
        assert await late.payload() == "hello late"
        assert len(gaps) == 1
    finally:
        await broker.close()


def _length_is(items: list[Any], length: int) -> Callable[[], bool]:
    return lambda: len(items) == length


async def test_every_outage_resubscribes_every_group_and_calls_on_reconnect_once(
    own_redis: OwnRedis,
) -> None:
    await own_redis.start()
    prefix = fresh_prefix()
    gaps: list[float] = []
    broker = make_broker(own_redis.url, channel_prefix=prefix, on_reconnect=gaps.append)
    await broker.start()
    inboxes = {group: Inbox() for group in ("alpha", "beta", "gamma")}
    try:
        for group, inbox in inboxes.items():
            await broker.join(group, inbox)
        for outage in (1, 2):
            await own_redis.stop()
            joined_in_gap = f"gap-{outage}"
            inboxes[joined_in_gap] = Inbox()
            await broker.join(joined_in_gap, inboxes[joined_in_gap])
            await own_redis.start()
            for group, inbox in inboxes.items():
                await publish_until_received(own_redis.url, prefix, group, inbox)
            await apoll_until(_length_is(gaps, outage), timeout_s=10, what=f"outage {outage}")
            # Every group is live through the broker's own publisher as well.
            for group, inbox in inboxes.items():
                assert await broker.publish(group, f"after outage {outage}") == 1
                while (payload := await inbox.payload()) != f"after outage {outage}":
                    assert payload.startswith("ping-")
            assert len(gaps) == outage, "one on_reconnect call per outage"
        assert broker.groups() == frozenset(inboxes)
        assert all(gap > 0 for gap in gaps)
    finally:
        await broker.close()


async def test_publish_while_redis_is_down_raises_promptly(own_redis: OwnRedis) -> None:
    await own_redis.start()
    gaps: list[float] = []
    broker = RedisBroker(own_redis.url, channel_prefix=fresh_prefix(), on_reconnect=gaps.append)
    await broker.start()
    try:
        await broker.join("g", Inbox())
        await own_redis.stop()
        # The generous deadline only catches a hang; a refused connection fails at once. The
        # reader is reconnecting (pausing between attempts) all along.
        async with asyncio.timeout(20):
            for n in range(5):
                with pytest.raises(BrokerUnavailable, match="cannot publish to Redis at"):
                    await broker.publish("g", n)
            outcomes = await asyncio.gather(
                *(broker.publish("g", n) for n in range(50)), return_exceptions=True
            )
        assert all(isinstance(outcome, BrokerUnavailable) for outcome in outcomes), outcomes
        assert gaps == []
    finally:
        await broker.close()


async def test_first_connection_to_a_late_redis_is_not_a_reconnect(
    own_redis: OwnRedis,
) -> None:
    prefix = fresh_prefix()
    gaps: list[float] = []
    broker = RedisBroker(
        own_redis.url, channel_prefix=prefix, on_reconnect=gaps.append, backoff_max_s=0.2
    )
    await broker.start()  # Redis is not running yet: warns, keeps trying
    try:
        inbox = Inbox()
        await broker.join("g", inbox)
        await own_redis.start()
        await publish_until_received(own_redis.url, prefix, "g", inbox)
        assert await broker.publish("g", "direct") == 1
        while (payload := await inbox.payload()) != "direct":
            assert payload.startswith("ping-")
        assert gaps == []
    finally:
        await broker.close()


async def publish_until_received(url: str, prefix: str, group: str, inbox: Inbox) -> None:
    """Publish from a separate client until ``inbox`` receives one of those events."""
    other = redis.asyncio.Redis.from_url(url)
    publish = other.register_script(broker_redis._PUBLISH_LUA)  # what every publisher sends
    attempt = 0

    async def delivered() -> bool:
        nonlocal attempt
        attempt += 1
        data = codec.encode_envelope(group, f"ping-{attempt}", time.time())
        with contextlib.suppress(redis.RedisError):
            await publish(keys=[prefix + group], args=[data, 100, 60_000])
        try:
            await inbox.get(timeout_s=0.1)
        except TimeoutError:
            return False
        return True

    try:
        await apoll_until(delivered, timeout_s=15, what=f"delivery to {group!r} through {url}")
    finally:
        await other.aclose()


async def test_idle_connection_is_kept_alive_by_ping(own_redis: OwnRedis) -> None:
    await own_redis.start()
    prefix = fresh_prefix()
    gaps: list[float] = []
    broker = RedisBroker(
        own_redis.url, channel_prefix=prefix, ping_interval_s=0.05, on_reconnect=gaps.append
    )
    await broker.start()
    try:
        inbox = Inbox()
        await broker.join("quiet", inbox)

        await apoll_until(
            _ping_count_at_least(own_redis, 5), timeout_s=10, what="five PINGs from the reader"
        )
        assert gaps == []
        assert await broker.publish("quiet", "still here") == 1
        assert await inbox.payload() == "still here"
    finally:
        await broker.close()


def _ping_count_at_least(server: OwnRedis, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        return int(stats.get("cmdstat_ping", {}).get("calls", 0)) >= count

    return check


async def test_hung_redis_is_detected_by_the_health_check_and_recovered(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="service.broker")
    await own_redis.start()
    prefix = fresh_prefix()
    gaps: list[float] = []
    broker = RedisBroker(
        own_redis.url,
        channel_prefix=prefix,
        ping_interval_s=0.1,
        connect_timeout_s=0.5,
        socket_timeout_s=0.5,
        on_reconnect=gaps.append,
    )
    await broker.start()
    try:
        room, hall = Inbox(), Inbox()
        await broker.join("room", room)
        await broker.join("hall", hall)
        assert await broker.publish("room", "before") == 1
        assert await room.payload() == "before"

        own_redis.freeze()  # connections stay open, nothing answers
        with pytest.raises(BrokerUnavailable, match="cannot publish to Redis at"):
            async with asyncio.timeout(10):
                await broker.publish("room", "timed out")  # may be delivered after the thaw

        async def loss_noticed() -> bool:
            return any("no reply to PING" in r.getMessage() for r in caplog.records)

        await apoll_until(loss_noticed, timeout_s=10, what="the reader noticing the hang")
        assert gaps == []
        own_redis.thaw()
        await publish_until_received(own_redis.url, prefix, "room", room)
        await publish_until_received(own_redis.url, prefix, "hall", hall)
        await apoll_until(_length_is(gaps, 1), timeout_s=10, what="on_reconnect after the thaw")
        assert await broker.publish("room", "again") == 1
        while (payload := await room.payload()) != "again":
            assert payload == "timed out" or payload.startswith("ping-")
        assert len(gaps) == 1
    finally:
        await broker.close()


async def test_close_is_bounded_and_fails_publishes_in_flight_when_redis_hangs(
    own_redis: OwnRedis,
) -> None:
    await own_redis.start()
    broker = RedisBroker(own_redis.url, channel_prefix=fresh_prefix(), socket_timeout_s=30)
    await broker.start()
    await broker.join("g", Inbox())
    own_redis.freeze()
    publishing = asyncio.create_task(broker.publish("g", "stuck"))
    queued = asyncio.create_task(broker.publish("g", "queued"))

    async def in_flight() -> bool:
        return not broker._outbox and broker._flusher is not None and not publishing.done()

    await apoll_until(in_flight, timeout_s=5, what="the first publish in flight")
    started = time.monotonic()
    async with asyncio.timeout(5):
        await broker.close()
        with pytest.raises(BrokerUnavailable, match="broker closed"):
            await publishing
        with pytest.raises(BrokerUnavailable, match="broker closed"):
            await queued
    assert time.monotonic() - started < 4


async def test_join_cancelled_while_waiting_for_redis_is_undone(own_redis: OwnRedis) -> None:
    await own_redis.start()
    prefix = fresh_prefix()
    broker = RedisBroker(own_redis.url, channel_prefix=prefix, socket_timeout_s=30)
    await broker.start()
    try:
        own_redis.freeze()  # SUBSCRIBE goes out, the confirmation does not come back
        joining = asyncio.create_task(broker.join("g", Inbox()))

        async def waiting_for_confirmation() -> bool:
            return (prefix + "g").encode() in broker._waiters

        await apoll_until(
            waiting_for_confirmation, timeout_s=10, what="join waiting for the confirmation"
        )
        for _ in range(10):  # a few loop turns: the SUBSCRIBE write completes
            await asyncio.sleep(0)
        assert not joining.done()
        joining.cancel()
        with pytest.raises(asyncio.CancelledError):
            await joining
        assert broker.groups() == frozenset()

        own_redis.thaw()
        checker = redis.asyncio.Redis.from_url(own_redis.url)
        try:
            await apoll_until(
                lambda: _is_zero(numsub(checker, prefix + "g")),
                timeout_s=10,
                what="the undo's UNSUBSCRIBE",
            )
        finally:
            await checker.aclose()
        inbox = Inbox()
        await broker.join("g", inbox)
        assert await broker.publish("g", "works") == 1
        assert await inbox.payload() == "works"
    finally:
        await broker.close()
