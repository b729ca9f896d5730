"""In-process broker: events reach only the subscribers of this one broker (one process).

It behaves like the Redis broker in everything a subscriber can observe: payloads go through the
same codec (so an unsupported type raises ``TypeError`` in ``publish``, tuples arrive as lists,
and subscribers never share the publisher's mutable objects), and callbacks run later in the
event loop (``loop.call_soon``), never inside ``publish``, in publish order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.broker import codec
from service.broker.base import Broker, BrokerUnavailable, Callback, LocalSubscribers


class MemoryBroker(Broker):
    """Fanout inside one process; for a single worker, development and tests."""

    def __init__(self) -> None:
        self._subscribers = LocalSubscribers()
        self._closed = False

    async def start(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the in-memory broker is closed")

    async def close(self) -> None:
        self._closed = True
        self._subscribers.clear()

    async def join(self, group: str, callback: Callback) -> None:
        if self._closed:
            raise BrokerUnavailable("the in-memory broker is closed")
        self._subscribers.add(group, callback)

    async def leave(self, group: str, callback: Callback) -> None:
        self._subscribers.remove(group, callback)

    async def publish(self, group: str, payload: Any) -> int:
        """Schedule delivery; returns 1 when the group has local subscribers, else 0."""
        data = codec.encode_envelope(group, payload, time.time())
        if self._closed:
            raise BrokerUnavailable("cannot publish: the in-memory broker is closed")
        if group not in self._subscribers:
            return 0
        asyncio.get_running_loop().call_soon(self._deliver, data)
        return 1

    def groups(self) -> frozenset[str]:
        return self._subscribers.groups()

    def _deliver(self, data: bytes) -> None:
        # The callbacks subscribed when the event is delivered, as with a Redis subscriber.
        event = codec.decode_envelope(data)
        callbacks = self._subscribers.callbacks(event.group)
        if callbacks:
            LocalSubscribers.dispatch(callbacks, event.group, event.payload, event.sent_at)
