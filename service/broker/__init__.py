"""Fanout brokers: deliver subscription events, by group, to every worker that has subscribers.

``make_broker(settings.redis_url)`` picks the backend: ``RedisBroker`` (pub/sub; crosses
processes and hosts) when a URL is set, else ``MemoryBroker`` (one process only). Code with no
running event loop publishes with ``publish_sync``. The wire format is in ``codec``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from service.broker.base import Broker, BrokerUnavailable, Callback
from service.broker.memory import MemoryBroker
from service.broker.redis import DEFAULT_CHANNEL_PREFIX, RedisBroker, publish_sync

__all__ = [
    "DEFAULT_CHANNEL_PREFIX",
    "Broker",
    "BrokerUnavailable",
    "Callback",
    "MemoryBroker",
    "RedisBroker",
    "make_broker",
    "publish_sync",
]

logger = logging.getLogger("service.broker")


def make_broker(
    redis_url: str | None,
    *,
    channel_prefix: str = DEFAULT_CHANNEL_PREFIX,
    on_reconnect: Callable[[float], None] | None = None,
) -> Broker:
    """A ``RedisBroker`` for ``redis_url``, or a ``MemoryBroker`` when it is empty or ``None``.

    ``on_reconnect(gap_s)`` is called after each reconnection to Redis with the length of the
    outage in seconds (see ``RedisBroker``); the in-memory broker never calls it.
    """
    if redis_url:
        return RedisBroker(redis_url, channel_prefix=channel_prefix, on_reconnect=on_reconnect)
    logger.warning("in-memory broker: events do not cross processes")
    return MemoryBroker()
