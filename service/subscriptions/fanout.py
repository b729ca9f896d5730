"""A worker's subscription fanout: its broker, the per-subscriber queue limit, its recorder.

The server builds one ``Fanout`` (``build_server``), starts it before it listens and closes it
after its connections are gone. While started, the fanout is *attached* to the server's event
loop: that is how code graphene calls without any server object (the ``Subscription`` field's
subscribe resolver, ``Subscription.broadcast`` in a mutation or in a thread) finds it. This
attachment, keyed by event loop, is the one process-wide registry of the subscriptions layer;
each loop has at most one fanout and a finished loop's entry disappears with it.

Wire format on a group's channel (inside the broker's envelope, which carries the send time):
``{"k": "n", "p": payload}`` for a notification, ``{"k": "u"}`` to end every subscription in the
group (server-side unsubscribe).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from service.broker import Broker, BrokerUnavailable, make_broker, publish_sync
from service.engine.recorder import NullRecorder, Recorder
from service.settings import Settings

__all__ = ["NOTIFY", "UNSUBSCRIBE", "Fanout", "attached", "publish", "publish_from_thread"]

NOTIFY = "n"
UNSUBSCRIBE = "u"

_attached: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Fanout] = (
    weakref.WeakKeyDictionary()
)


class Fanout:
    """``broker`` fans events out by group; ``queue_limit`` bounds each subscriber's queue
    (``Subscription.notification_queue_limit`` overrides it per class); ``recorder`` counts
    subscriptions and dropped notifications."""

    def __init__(
        self, broker: Broker, *, queue_limit: int = 1000, recorder: Recorder | None = None
    ) -> None:
        self.broker = broker
        self.queue_limit = max(1, queue_limit)
        self.recorder: Recorder = recorder or NullRecorder()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> bool:
        """Start the broker and attach to the running loop; return ``True``.

        A loop has one fanout: when another is attached already (a second server on the same
        loop), this one stays unstarted, the servers share the first one, and ``False`` is
        returned.
        """
        loop = asyncio.get_running_loop()
        other = _attached.get(loop)
        if other is self:
            return True
        if other is not None:
            return False
        await self.broker.start()
        self.loop = loop
        _attached[loop] = self
        return True

    async def close(self) -> None:
        """Detach and close the broker (bounded by the broker's own close); nothing when this
        fanout never started. Idempotent."""
        loop, self.loop = self.loop, None
        if loop is None:
            return
        if _attached.get(loop) is self:
            del _attached[loop]
        await self.broker.close()

    async def publish(self, group_key: str, message: dict[str, Any]) -> int:
        """Publish on the broker; ``BrokerUnavailable`` when it cannot take the event."""
        return await self.broker.publish(group_key, message)


def attached(loop: asyncio.AbstractEventLoop | None = None) -> Fanout | None:
    """The fanout attached to ``loop`` (default: the running loop), if any."""
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
    return _attached.get(loop)


async def publish(group_key: str, message: dict[str, Any]) -> int:
    """Publish from async code: through the running loop's fanout when a server runs on it,
    else through a broker made for this one call from ``REDIS_URL`` (a script, a task queue).
    Raises ``BrokerUnavailable`` when there is neither."""
    fanout = attached()
    if fanout is not None:
        return await fanout.publish(group_key, message)
    redis_url = Settings.from_env().redis_url
    if not redis_url:
        raise BrokerUnavailable(
            "no server runs on this event loop and REDIS_URL is not set: nothing could deliver "
            "the event to subscribers"
        )
    broker = make_broker(redis_url)
    await broker.start()
    try:
        return await broker.publish(group_key, message)
    finally:
        await broker.close()


def publish_from_thread(group_key: str, message: dict[str, Any]) -> int:
    """Publish from a thread with no running loop: through the fanout of the one server running
    in this process (its loop runs the publish), else synchronously to ``REDIS_URL``."""
    running = [f for loop, f in list(_attached.items()) if loop.is_running()]
    if len(running) == 1:
        fanout = running[0]
        assert fanout.loop is not None
        future = asyncio.run_coroutine_threadsafe(fanout.publish(group_key, message), fanout.loop)
        return int(future.result(30))
    redis_url = Settings.from_env().redis_url
    if not redis_url:
        raise BrokerUnavailable(
            "cannot broadcast from outside a worker without REDIS_URL: set REDIS_URL so the "
            "message reaches the workers"
        )
    return publish_sync(redis_url, group_key, message)
