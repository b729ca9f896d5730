"""The transactional outbox: subscription events written with the data change they announce.

A mutation that changes data and announces it calls ``append(tx, channel, message)`` inside the
same ``Database.transaction()``: the event row (``event_outbox``, migration 3) commits or rolls
back with the change. So a committed change always has its event, even when Redis is down at
that moment, and a rolled-back change never announces anything.

``OutboxRelay`` (one per worker; the supervisor's workers start it) publishes committed events
in ``id`` order through ``publish(channel, message)`` and deletes them once published:

- it wakes on ``NOTIFY graphql_service_outbox`` (sent by ``append``, delivered at commit) and
  every ``poll_interval_s`` in any case, so an event left by a worker that died is relayed by
  another;
- one relay at a time works (``pg_try_advisory_xact_lock``), so events keep their order across
  workers and hosts;
- a failure to publish (Redis down) rolls back: nothing is deleted, and it tries again after a
  pause that grows from ``retry_initial_s`` to ``retry_max_s``;
- a relay that dies between publishing and deleting leaves the event to be published again:
  every message carries its ``event_id`` (key ``"e"``) and subscribers drop an id they have
  seen (``SubscriptionStream``), so a retried event reaches each of them once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from service.broker import BrokerUnavailable, codec
from service.db.database import Database, DatabaseUnavailable, Transaction

log = logging.getLogger("service.outbox")

#: The Postgres NOTIFY channel that wakes the relays.
NOTIFY_CHANNEL = "graphql_service_outbox"
#: Key of the transaction-scoped advisory lock one relay holds while it publishes ("gqlsvcob").
RELAY_LOCK_KEY = 0x67716C7376636F62

Publish = Callable[[str, Any], Awaitable[Any]]


async def append(tx: Transaction, channel: str, message: dict[str, Any]) -> uuid.UUID:
    """Add the event ``message`` for ``channel`` (a ``Subscription`` group key) to the outbox,
    in transaction ``tx``; returns its event id. ``message`` must be encodable by the broker
    codec (``TypeError`` naming the type otherwise, raised here, before anything is written)."""
    event_id = uuid.uuid4()
    data = codec.dumps(message)
    await tx.execute(
        "INSERT INTO event_outbox (event_id, channel, message) VALUES (%s, %s, %s)",
        (str(event_id), channel, data),
    )
    await tx.execute("SELECT pg_notify(%s, '')", (NOTIFY_CHANNEL,))
    return event_id


class OutboxRelay:
    """Publishes committed outbox events; see the module docstring. ``start()`` runs it in a
    task; ``close()`` stops it (bounded)."""

    def __init__(
        self,
        database: Database,
        publish: Publish,
        *,
        batch: int = 200,
        poll_interval_s: float = 1.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 2.0,
    ) -> None:
        self.database = database
        self.publish = publish
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._listener = asyncio.create_task(self._listen(), name="outbox-listen")

    async def close(self, timeout_s: float = 2.0) -> None:
        self._closed = True
        self._wake.set()
        tasks = [task for task in (self._task, self._listener) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)

    def kick(self) -> None:
        """Publish soon (a commit just added events)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish and delete up to ``batch`` events, oldest first; returns how many (0 when
        another relay holds the lock or the outbox is empty). Raises ``DatabaseUnavailable`` or
        ``BrokerUnavailable`` when it cannot; nothing is deleted then."""
        async with self.database.transaction() as tx:
            locked = await tx.fetchone("SELECT pg_try_advisory_xact_lock(%s)", (RELAY_LOCK_KEY,))
            if not locked or not locked[0]:
                return 0
            rows = await tx.fetch(
                "SELECT id, event_id, channel, message FROM event_outbox ORDER BY id LIMIT %s",
                (self.batch,),
            )
            for _, event_id, channel, data in rows:
                message = codec.loads(bytes(data))
                message["e"] = str(event_id)
                await self.publish(channel, message)
            if rows:
                await tx.execute(
                    "DELETE FROM event_outbox WHERE id = ANY(%s)", ([row[0] for row in rows],)
                )
            return len(rows)

    async def _run(self) -> None:
        pause = self.retry_initial_s
        while not self._closed:
            try:
                relayed = await self.relay_once()
            except (DatabaseUnavailable, BrokerUnavailable) as exc:
                log.warning("outbox: events not relayed yet (%s); retrying in %.2f s", exc, pause)
                await asyncio.sleep(pause)  # a backoff pause, not a wait for an outcome
                pause = min(self.retry_max_s, pause * 2)
                continue
            except Exception:
                log.exception("outbox: relaying failed; retrying")
                await asyncio.sleep(self.retry_max_s)
                continue
            pause = self.retry_initial_s
            if relayed >= self.batch:
                continue  # more waiting
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)

    async def _listen(self) -> None:
        """Hold a connection that LISTENs for commits to the outbox and wakes the relay."""
        while not self._closed:
            try:
                async with self.database.connection() as conn:
                    async with conn.cursor() as cur:
                        await cur.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._wake.set()  # events may have committed before we listened
                    while not self._closed:
                        try:
                            await asyncio.wait_for(conn.notifies.get(), 30.0)
                        except TimeoutError:
                            async with conn.cursor(timeout=5.0) as cur:  # still alive?
                                await cur.execute("SELECT 1")
                            continue
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("outbox: listening connection lost (%s); polling meanwhile", exc)
                await asyncio.sleep(self.poll_interval_s)  # the relay polls meanwhile
