"""Redis pub/sub fanout broker (redis.asyncio).

Each broker (one per worker) holds ONE pub/sub connection for receiving and one more
connection for publishing. Group ``g`` is the channel ``channel_prefix + g``, and its *log* is
the Redis stream with the same name (keys and channels are separate namespaces).

Publishing appends the event to the group's log and publishes it, atomically (one Lua script:
``XADD <log> MAXLEN ~ LOG_MAX_EVENTS`` then ``PUBLISH <channel> "<log id> <event>"``; the log
expires ``LOG_TTL_MS`` after its last event). Receiving remembers, per group with local
subscribers, the log id of the last event delivered. After a reconnect, once the groups are
subscribed again, the reader first replays each group's log after that id (``XRANGE``), then
reads on; an event that arrives both ways is delivered once (ids only grow). So an event whose
``publish`` returned reaches every process that was subscribed to its group before it was
published and is still subscribed, across a Redis restart or a lost connection, in publish
order and exactly once, as long as the log still holds it (the last ``LOG_MAX_EVENTS`` events of
the group, for ``LOG_TTL_MS`` after the last one). A group joined during an outage starts at its
first live event.

Receiving. A reader task owns the pub/sub connection's receiving side and calls the local
callbacks of each message's group, in arrival order. ``join`` and ``leave`` write ``SUBSCRIBE`` /
``UNSUBSCRIBE`` on that connection and the reader resolves their confirmations, so ``join``
returns once Redis has confirmed the subscription: a publish right after it is delivered.

Publishing. ``publish`` queues the event for a publisher task that sends the queue in call order,
one pipeline at a time: events published while a pipeline is in flight go together in the next
(no timer, so no added latency when idle). Measured here, many concurrent publishers get about
three times the throughput of one ``PUBLISH`` round trip per event. Events from one publisher
arrive in the order it published them.

Connection loss. The pub/sub client runs redis-py's health check
(``health_check_interval=ping_interval_s``): after that long without a byte from Redis,
``get_message`` sends a PING and swallows the reply. redis-py does not notice a PING left
unanswered, so the reader does: silence for another ``ping_interval_s`` means a hung server. That,
or a dropped connection (EOF, error), ends the connection, and the reader's connection loop, a
redis-py ``Retry`` with no limit and ``DecorrelatedJitterBackoff``, pauses (``backoff_initial_s``
first, then at random up to three times the last pause, at most ``backoff_max_s``), reconnects
and subscribes every group that has local subscribers. Once Redis has confirmed those, the
broker logs a warning with the length of the gap and calls ``on_reconnect(gap_s)``: once per
outage. Local registrations survive the gap; events published while this connection was down
are replayed from the logs (see above). While Redis is down:

- ``publish`` raises ``BrokerUnavailable`` (refused connections fail at once; a hung server
  after ``socket_timeout_s``, at most twice that for events queued behind a hung pipeline): an
  event is never dropped silently. After a timeout the event may still have reached Redis;
- ``join`` registers locally and returns without waiting; the reader subscribes on reconnect;
- ``start`` does not fail: it logs a warning and the reader keeps trying.

Why the connection loop is ours rather than redis-py's own reconnection (redis-py 8.1): given a
``Retry`` that retries, a ``PubSub`` reconnects and resubscribes by itself inside
``get_message`` (``PubSub._execute`` and ``on_connect``) and then reads on. Nothing outside sees
when the outage began, so it could be neither timed nor told from a fresh start, and ``join``,
running in another task, would wait out the outage or reconnect the same connection at the same
time. So commands on both connections run with redis-py's retries off: a failed read reaches the
reader (after the one reconnection attempt redis-py makes regardless; the reader replaces that
connection), and a failed ``PUBLISH`` reaches its caller at once instead of being sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, cast

import redis
import redis.asyncio
from redis.asyncio.client import PubSub
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import DecorrelatedJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig
from redis.retry import Retry as SyncRetry

from service.broker import codec
from service.broker.base import Broker, BrokerUnavailable, Callback, LocalSubscribers

logger = logging.getLogger("service.broker")

DEFAULT_CHANNEL_PREFIX = "graphql-service:"

# Errors that mean "Redis is unreachable or the connection broke".
_IO_ERRORS = (RedisError, OSError)

# One queued PUBLISH: channel, wire bytes, and the future its caller awaits.
_Outgoing = tuple[str, bytes, "asyncio.Future[int]"]

#: Events kept per group for replay (approximate trim, ``XADD MAXLEN ~``) and how long a group's
#: log lives after its last event.
LOG_MAX_EVENTS = 10_000
LOG_TTL_MS = 3_600_000

#: Publish one event: append it to the group's log (a stream whose key is the channel's name;
#: keys and channels are separate namespaces) and PUBLISH ``<log id> <event>`` on the channel,
#: atomically. Returns the number of receiving processes.
_PUBLISH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('PUBLISH', KEYS[1], id .. ' ' .. ARGV[1])
"""

EventId = tuple[int, int]


def parse_event_id(raw: bytes) -> EventId:
    """A stream id ``b"<ms>-<seq>"`` as a comparable pair."""
    ms, _, seq = raw.partition(b"-")
    return int(ms), int(seq)


def redis_reachable(url: str, timeout_s: float = 2.0) -> str | None:
    """``None`` when a PING to ``url`` succeeds, else the reason."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def redact_url(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def publish_sync(
    redis_url: str,
    group: str,
    payload: Any,
    *,
    channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
    timeout_s: float = 2.0,
) -> int:
    """Publish one event from code without a running event loop (a thread, a script, a process).

    Uses the blocking redis client, one connection per call. Returns the number of receivers
    (subscribed processes). Raises ``TypeError`` naming an unsupported payload type and
    ``BrokerUnavailable`` when Redis cannot take the event within about ``timeout_s``.
    """
    data = codec.encode_envelope(group, payload, time.time())
    try:
        client = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=SyncRetry(NoBackoff(), 0),
        )
        try:
            channel = channel_prefix + group
            script = client.register_script(_PUBLISH_LUA)
            return int(script(keys=[channel], args=[data, LOG_MAX_EVENTS, LOG_TTL_MS]))
        finally:
            client.close()
    except _IO_ERRORS as exc:
        raise BrokerUnavailable(
            f"cannot publish to Redis at {redact_url(redis_url)}: {exc}"
        ) from exc


class RedisBroker(Broker):
    """Fanout across processes and hosts through Redis pub/sub.

    ``on_reconnect(gap_s)``, if given, is called in the event loop after each reconnection
    (resubscriptions confirmed) with the seconds since the connection was lost; it must not block.
    """

    def __init__(
        self,
        url: str,
        *,
        channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
        connect_timeout_s: float = 1.0,
        socket_timeout_s: float = 2.0,
        ping_interval_s: float = 10.0,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 2.0,
        close_timeout_s: float = 2.0,
        max_batch: int = 512,
        on_reconnect: Callable[[float], None] | None = None,
    ) -> None:
        self._url = url
        self._safe_url = redact_url(url)
        self._prefix = channel_prefix
        self._prefix_bytes = channel_prefix.encode()
        self._connect_timeout_s = connect_timeout_s
        self._socket_timeout_s = socket_timeout_s
        self._ping_interval_s = ping_interval_s
        self._close_timeout_s = close_timeout_s
        self._max_batch = max_batch
        self._on_reconnect = on_reconnect
        self._subscribers = LocalSubscribers()
        # PUBLISH goes through its own client, one batch (pipeline) at a time; the pub/sub
        # connection comes from a second client.
        self._publisher: redis.asyncio.Redis | None = None
        self._receiver: redis.asyncio.Redis | None = None
        self._outbox: deque[_Outgoing] = deque()
        self._outbox_ready = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        # The pub/sub connection while it is usable; None while (re)connecting or down.
        self._pubsub: PubSub | None = None
        # Per channel, one future per SUBSCRIBE sent and not yet confirmed, in sending order.
        self._waiters: dict[bytes, deque[asyncio.Future[bool]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._first_attempt = asyncio.Event()
        self._closed = False
        # The reader's pauses between connection attempts. Decorrelated jitter keeps its state
        # in the backoff (the last pause), which ``reset()`` clears once connected. redis-py
        # 8.1's ExponentialBackoff and EqualJitterBackoff instead compute ``base * 2**failures``
        # from the count of one ``call_with_retry``, which here spans the broker's life: it
        # would never go back to the short pause, and overflows after ~1000 failures.
        self._backoff = DecorrelatedJitterBackoff(cap=backoff_max_s, base=backoff_initial_s)
        # Per group with local subscribers: the log id of the last event delivered to them, so
        # that a reconnect replays what was missed (XRANGE) and drops what arrives twice.
        self._last_ids: dict[str, EventId] = {}
        self._script: Any = None
        self._up = False  # connected, resubscriptions confirmed
        self._retrying = False  # an attempt failed since the last successful connection
        self._down_since: float | None = None  # loop time an established connection was lost

    @property
    def channel_prefix(self) -> str:
        """Group ``g`` travels on the Redis channel ``channel_prefix + g``."""
        return self._prefix

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the clients and the reader; wait (bounded) for the first connection attempt.

        Does not raise when Redis is down: it warns, and the reader keeps reconnecting.
        """
        if self._closed:
            raise BrokerUnavailable(f"the Redis broker for {self._safe_url} is closed")
        if self._reader is not None:
            return
        options: dict[str, Any] = {
            "socket_connect_timeout": self._connect_timeout_s,
            "socket_timeout": self._socket_timeout_s,
            # No command is retried (see the module docstring): with retries, redis-py 8.1
            # sends a failed PUBLISH again (Redis.execute_command), a duplicate if Redis had
            # run it, and reconnects the pub/sub connection inside get_message.
            "retry": AsyncRetry(NoBackoff(), 0),
            # RESP2: the classic pub/sub wire format, spoken by every Redis version.
            "protocol": 2,
            # With maintenance notifications on (redis-py's default with RESP3), the pool skips
            # its check for a dead pooled connection, so the first PUBLISH after a Redis restart
            # would fail on the old socket. We do not use them; keep the check.
            "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        }
        self._publisher = redis.asyncio.Redis.from_url(self._url, **options)
        self._script = self._publisher.register_script(_PUBLISH_LUA)
        self._receiver = redis.asyncio.Redis.from_url(
            self._url, health_check_interval=self._ping_interval_s, **options
        )
        self._flusher = asyncio.create_task(self._flush(), name="broker-redis-publisher")
        self._flusher.add_done_callback(self._task_done)
        self._reader = asyncio.create_task(self._run(), name="broker-redis-reader")
        self._reader.add_done_callback(self._task_done)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._first_attempt.wait(),
                self._connect_timeout_s + self._socket_timeout_s + 0.5,
            )
        if self._pubsub is None:
            logger.warning(
                "broker: Redis at %s is unreachable at start; retrying in the background "
                "(publish raises BrokerUnavailable until it is back)",
                self._safe_url,
            )

    async def close(self) -> None:
        """Cancel the reader and helper tasks, close both connections; within a bounded time."""
        if self._closed:
            return
        self._closed = True
        tasks = [task for task in (self._reader, self._flusher, *self._tasks) if task]
        for task in tasks:
            task.cancel()
        self._outbox_ready.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._close_timeout_s)
            if pending:
                logger.warning("broker: %d task(s) did not stop within the grace", len(pending))
        if self._pubsub is not None:
            await self._drop(self._pubsub)
        self._fail_waiters()
        self._fail_outbox("broker closed")
        self._subscribers.clear()
        clients = [client for client in (self._publisher, self._receiver) if client is not None]
        self._publisher = self._receiver = None
        for client in clients:
            try:
                await asyncio.wait_for(client.aclose(), self._close_timeout_s)
            except (TimeoutError, *_IO_ERRORS) as exc:
                logger.warning("broker: closing a Redis client failed: %s", exc)

    # -- subscriptions ---------------------------------------------------------------------

    async def join(self, group: str, callback: Callback) -> None:
        """Register ``callback``; when connected, return once Redis confirmed the subscription.

        While Redis is down (or before ``start``), this registers locally and returns at once;
        the reader subscribes the group when it (re)connects. If cancelled, the registration is
        undone.
        """
        if self._closed:
            raise BrokerUnavailable(f"the Redis broker for {self._safe_url} is closed")
        first = self._subscribers.add(group, callback)
        try:
            await self._subscribe(group, first)
        except asyncio.CancelledError:
            if self._subscribers.remove(group, callback):
                self._spawn(self._unsubscribe(group))
            raise

    async def leave(self, group: str, callback: Callback) -> None:
        """Undo one join; the last local leaver sends ``UNSUBSCRIBE`` (not awaited to confirm)."""
        if self._subscribers.remove(group, callback):
            self._last_ids.pop(group, None)
            await self._unsubscribe(group)

    def groups(self) -> frozenset[str]:
        return self._subscribers.groups()

    async def _subscribe(self, group: str, first: bool) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            return
        channel = self._prefix + group
        key = channel.encode()
        if first:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, deque()).append(waiter)
            try:
                await self._write(pubsub, "SUBSCRIBE", channel)
            except _IO_ERRORS as exc:
                # The connection broke; the reader reconnects and subscribes every local group.
                logger.info("broker: SUBSCRIBE %s failed (%s); deferred to reconnect", channel, exc)
                self._forget_waiter(key, waiter)
                return
        else:
            pending = self._waiters.get(key)
            if not pending:
                return  # already confirmed
            waiter = pending[-1]
        done, _ = await asyncio.wait({waiter}, timeout=self._socket_timeout_s)
        if not done:
            logger.warning(
                "broker: Redis at %s did not confirm SUBSCRIBE %s within %.1f s",
                self._safe_url,
                channel,
                self._socket_timeout_s,
            )

    async def _unsubscribe(self, group: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or group in self._subscribers:
            return
        try:
            await self._write(pubsub, "UNSUBSCRIBE", self._prefix + group)
        except _IO_ERRORS as exc:
            # On reconnect the reader subscribes only groups that have local subscribers.
            logger.info("broker: UNSUBSCRIBE %s%s failed: %s", self._prefix, group, exc)

    @staticmethod
    async def _write(pubsub: PubSub, *command: str) -> None:
        """Write a (UN)SUBSCRIBE on the pub/sub connection; the reader reads the confirmation.

        Written on the connection rather than through ``PubSub.subscribe``: in redis-py 8.1 that
        PINGs and reads the reply itself when a health check is due and the PubSub has no
        channel yet (a second read racing the reader's), and after a failed write reconnects
        from the caller's task (``PubSub._execute``). Here a failed write only closes the
        connection, and the reader reconnects.
        """
        connection: AbstractConnection | None = pubsub.connection
        if connection is None or not connection.is_connected:
            raise RedisConnectionError("the pub/sub connection is closed")
        await connection.send_command(*command, check_health=False)

    def _forget_waiter(self, key: bytes, waiter: asyncio.Future[bool]) -> None:
        pending = self._waiters.get(key)
        if pending is not None and waiter in pending:
            pending.remove(waiter)
            if not pending:
                del self._waiters[key]

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for pending in waiters.values():
            for waiter in pending:
                if not waiter.done():
                    waiter.set_result(False)

    # -- publishing ------------------------------------------------------------------------

    async def publish(self, group: str, payload: Any) -> int:
        """``PUBLISH`` the event; returns the number of subscribed processes that received it.

        Events are sent in call order, batched: while one pipeline is in flight, the events
        published meanwhile wait and go together in the next one (no timer, so no added latency
        when idle). Raises ``BrokerUnavailable`` within about ``socket_timeout_s`` (at most twice
        that when Redis hangs). After a timeout the event may still have reached Redis.
        """
        data = codec.encode_envelope(group, payload, time.time())
        if self._flusher is None or self._closed:
            state = "closed" if self._closed else "not started"
            raise BrokerUnavailable(f"cannot publish to Redis at {self._safe_url}: broker {state}")
        sent: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._outbox.append((self._prefix + group, data, sent))
        self._outbox_ready.set()
        return await sent

    async def _flush(self) -> None:
        """The publisher task: send the outbox, one pipeline at a time, until closed."""
        # Loops test _closed too: on Python 3.11, asyncio.wait_for inside redis-py can swallow
        # a cancellation that lands just as a write completes.
        while not self._closed:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            while self._outbox:
                batch: list[_Outgoing] = []
                while self._outbox and len(batch) < self._max_batch:
                    item = self._outbox.popleft()
                    if not item[2].done():  # its caller was cancelled: skip it
                        batch.append(item)
                if batch:
                    await self._send(batch)

    async def _send(self, batch: list[_Outgoing]) -> None:
        assert self._publisher is not None
        script = self._script
        try:
            if len(batch) == 1:  # a plain command costs less than a pipeline of one
                channel, data, _ = batch[0]
                results = [await script(keys=[channel], args=[data, LOG_MAX_EVENTS, LOG_TTL_MS])]
            else:
                async with self._publisher.pipeline(transaction=False) as pipe:
                    pipe.scripts.add(script)  # loaded first if Redis lost it (a restart)
                    for channel, data, _ in batch:
                        pipe.evalsha(script.sha, 1, channel, data, LOG_MAX_EVENTS, LOG_TTL_MS)
                    results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for _, _, sent in batch:
                self._fail(sent, "broker closed while publishing")
            raise
        except Exception as exc:
            if not isinstance(exc, _IO_ERRORS):
                logger.exception("broker: unexpected error publishing to %s", self._safe_url)
            for _, _, sent in batch:
                self._settle(sent, exc)
            return
        for (_, _, sent), result in zip(batch, results, strict=True):
            self._settle(sent, result)

    def _settle(self, sent: asyncio.Future[int], result: Any) -> None:
        if sent.done():
            return
        if isinstance(result, BaseException):
            self._fail(sent, str(result), cause=result)
        else:
            sent.set_result(int(result))

    def _fail(
        self, sent: asyncio.Future[int], reason: str, cause: BaseException | None = None
    ) -> None:
        if not sent.done():
            error = BrokerUnavailable(f"cannot publish to Redis at {self._safe_url}: {reason}")
            error.__cause__ = cause
            sent.set_exception(error)

    def _fail_outbox(self, reason: str) -> None:
        outbox, self._outbox = self._outbox, deque()
        for _, _, sent in outbox:
            self._fail(sent, reason)

    # -- the reader ------------------------------------------------------------------------

    async def _run(self) -> None:
        # No retry limit; any RedisError (a refused connection, a hang, an error reply to
        # SUBSCRIBE) means: pause, then a new connection. _session returns only once closed.
        retry = AsyncRetry(self._backoff, -1, supported_errors=(RedisError,))
        await retry.call_with_retry(self._session, self._failed)

    async def _session(self) -> None:
        """One pub/sub connection: connect, resubscribe, dispatch until it fails (raises)."""
        if self._closed:
            return
        assert self._receiver is not None
        pubsub = self._receiver.pubsub()
        try:
            pending = await self._connect(pubsub)
            self._first_attempt.set()
            await self._receive(pubsub, pending)
        except Exception as exc:
            if isinstance(exc, RedisError):
                raise
            logger.exception("broker: reader failed; reconnecting")
            raise RedisError(f"{type(exc).__name__}: {exc}") from exc  # the same pause and retry
        finally:
            await self._drop(pubsub)

    async def _failed(self, error: Exception) -> None:
        """``Retry``'s failure handler, before its pause: log the loss or the first failure."""
        self._first_attempt.set()
        if self._up:
            self._up = False
            self._down_since = asyncio.get_running_loop().time()
            logger.warning(
                "broker: lost the Redis pub/sub connection to %s: %s; reconnecting",
                self._safe_url,
                error,
            )
        elif not self._retrying:
            logger.warning(
                "broker: cannot connect to Redis at %s: %s; retrying", self._safe_url, error
            )
        self._retrying = True

    async def _connect(self, pubsub: PubSub) -> set[bytes]:
        """Connect ``pubsub`` and subscribe every local group; returns the channels sent."""
        await pubsub.connect()
        # From here, join and leave talk to this connection; the snapshot below is taken in the
        # same step, so no group falls between the two.
        self._pubsub = pubsub
        channels = [self._prefix + group for group in sorted(self._subscribers.groups())]
        keys = {channel.encode() for channel in channels}
        loop = asyncio.get_running_loop()
        for key in keys:
            self._waiters.setdefault(key, deque()).append(loop.create_future())
        if channels:
            await self._write(pubsub, "SUBSCRIBE", *channels)
        return keys

    def _connected(self, resubscribed: int) -> None:
        """Every resubscription is confirmed: the outage, if any, is over."""
        self._backoff.reset()
        self._up = True
        self._retrying = False
        down_since, self._down_since = self._down_since, None
        if down_since is None:
            logger.info("broker: connected to Redis at %s", self._safe_url)
            return
        gap_s = asyncio.get_running_loop().time() - down_since
        logger.warning(
            "broker: reconnected to Redis at %s after a %.3f s gap; resubscribed %d group(s) "
            "and replayed their logs",
            self._safe_url,
            gap_s,
            resubscribed,
        )
        if self._on_reconnect is not None:
            try:
                self._on_reconnect(gap_s)
            except Exception:
                logger.exception("broker: the on_reconnect callback failed")

    async def _drop(self, pubsub: PubSub) -> None:
        if self._pubsub is pubsub:
            self._pubsub = None
            self._fail_waiters()
        try:
            await pubsub.aclose()
        except Exception as exc:
            logger.debug("broker: closing the pub/sub connection: %s", exc)

    async def _receive(self, pubsub: PubSub, pending: set[bytes]) -> None:
        """Dispatch messages until the connection fails (raises) or the broker closes.

        ``pending``: the channels subscribed on connecting, until Redis confirms them.
        """
        loop = asyncio.get_running_loop()
        interval = self._ping_interval_s
        started = loop.time()
        resubscribed = len(pending)
        if not pending:
            self._connected(resubscribed)
        while not self._closed:
            connection: AbstractConnection | None = pubsub.connection
            if connection is None or not connection.is_connected:
                # Checked first: redis-py would reconnect a closed connection in get_message.
                raise RedisConnectionError("the pub/sub connection was closed")
            # redis-py moves next_health_check to ``interval`` after the last reply it read,
            # and get_message PINGs once past it; but a PING that goes unanswered goes
            # unnoticed there (a read with a timeout just returns None), so the deadline is ours.
            silent = loop.time() - max(started, connection.next_health_check - interval)
            if silent >= 2 * interval:
                raise RedisTimeoutError(f"no reply to PING within {interval:.1f} s")
            wait_s = (interval if silent <= interval else 2 * interval) - silent
            message = await pubsub.get_message(timeout=max(wait_s, 0.001))
            if message is None:
                continue
            self._handle(message)
            if pending and message["type"] == "subscribe":
                pending.discard(message["channel"])
                if not pending:
                    # Subscribed again: what was published while this connection was down is
                    # in the groups' logs. Replay it before reading on; what pub/sub delivers
                    # meanwhile waits in the socket and is dropped as a duplicate if replayed.
                    await self._replay()
                    self._connected(resubscribed)

    async def _replay(self) -> None:
        """Deliver, for every group that has delivered before, the logged events after the last
        one delivered (``XRANGE (last +``), in order, page by page."""
        assert self._publisher is not None
        for group, last in list(self._last_ids.items()):
            key = self._prefix + group
            start = f"({last[0]}-{last[1]}"
            replayed = 0
            while group in self._last_ids:
                # RESP2, no decode_responses: ids and fields come back as bytes.
                entries: list[tuple[bytes, dict[bytes, bytes]]] = cast(
                    Any, await self._publisher.xrange(key, min=start, max="+", count=500)
                )
                for raw_id, fields in entries:
                    self._deliver(group, raw_id, fields[b"e"])
                    replayed += 1
                if len(entries) < 500:
                    break
                start = "(" + entries[-1][0].decode()
            if replayed:
                logger.info("broker: replayed %d event(s) of %s from its log", replayed, group)

    def _deliver(self, group: str, raw_id: bytes, data: bytes) -> None:
        """Hand one logged event to the group's local callbacks, unless already delivered."""
        callbacks = self._subscribers.callbacks(group)
        if not callbacks:
            return  # the last subscriber left; UNSUBSCRIBE is on its way
        event_id = parse_event_id(raw_id)
        last = self._last_ids.get(group)
        if last is not None and event_id <= last:
            return  # replayed already, or delivered before the reconnect
        self._last_ids[group] = event_id
        try:
            event = codec.decode_envelope(data)
        except ValueError as exc:
            logger.warning("broker: dropped an event of %s: %s", group, exc)
            return
        LocalSubscribers.dispatch(callbacks, group, event.payload, event.sent_at)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel: bytes = message["channel"]
            group = channel[len(self._prefix_bytes) :].decode()
            raw_id, _, data = message["data"].partition(b" ")
            try:
                self._deliver(group, raw_id, data)
            except ValueError:
                logger.warning("broker: dropped a message without a log id on %r", channel)
        elif kind == "subscribe":
            key = message["channel"]
            pending = self._waiters.get(key)
            if pending:
                waiter = pending.popleft()
                if not pending:
                    del self._waiters[key]
                if not waiter.done():
                    waiter.set_result(True)

    # -- helper tasks ----------------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        if self._closed:
            coroutine.close()
            return
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("broker: task %s failed", task.get_name(), exc_info=task.exception())
