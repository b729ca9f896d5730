"""The broker interface the subscriptions layer calls, and the bookkeeping both backends share.

A broker fans events out by *group* (a string such as ``"chat:42"``). Inside one process, any
number of local subscribers join a group with a callback; the broker subscribes its backend to
the group when the first one joins and unsubscribes when the last one leaves. ``publish`` sends
``(group, payload, sent_at)`` to every process subscribed to the group, each of which calls its
local callbacks in publish order.

Callbacks run in the event loop thread and must not block: they hand the event to a queue and
return. An exception in one callback is logged and does not stop delivery to the others.
Delivery is at most once: events published while a process is cut off from the backend are not
replayed to it.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("service.broker")

Callback = Callable[[str, Any, float], None]
"""``callback(group, payload, sent_at)``; ``sent_at`` is the publisher's ``time.time()``."""


class BrokerUnavailable(Exception):
    """The backend cannot take the event now; the message says which backend and why.

    Raised by ``publish`` instead of dropping an event silently.
    """


class Broker(abc.ABC):
    """Fanout of events by group; one instance per process (per worker)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect to the backend and start receiving."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop receiving and release connections, in bounded time. Idempotent."""

    @abc.abstractmethod
    async def join(self, group: str, callback: Callback) -> None:
        """Register ``callback`` for ``group``; events published after this returns reach it.

        Joins are counted: the same callback joined twice is called twice per event and must
        leave twice.
        """

    @abc.abstractmethod
    async def leave(self, group: str, callback: Callback) -> None:
        """Undo one ``join(group, callback)``; a no-op when there is none to undo."""

    @abc.abstractmethod
    async def publish(self, group: str, payload: Any) -> int:
        """Send ``payload`` to ``group`` with ``sent_at=time.time()``.

        Returns how many receivers (processes subscribed to the group) the backend reached.
        Raises ``TypeError`` naming an unsupported payload type (see ``service.broker.codec``)
        and ``BrokerUnavailable`` when the backend cannot take the event.
        """

    @abc.abstractmethod
    def groups(self) -> frozenset[str]:
        """The groups that have local subscribers."""


class LocalSubscribers:
    """Reference-counted callbacks per group, and their dispatch.

    Each group maps to a tuple rebuilt on join and leave, so dispatch iterates without copying.
    """

    __slots__ = ("_by_group",)

    def __init__(self) -> None:
        self._by_group: dict[str, tuple[Callback, ...]] = {}

    def add(self, group: str, callback: Callback) -> bool:
        """Register one join; ``True`` when it is the group's first local subscriber."""
        current = self._by_group.get(group, ())
        self._by_group[group] = (*current, callback)
        return not current

    def remove(self, group: str, callback: Callback) -> bool:
        """Undo one join; ``True`` when that was the group's last local subscriber."""
        current = self._by_group.get(group)
        if not current:
            return False
        for index, candidate in enumerate(current):
            if candidate == callback:
                remaining = current[:index] + current[index + 1 :]
                break
        else:
            return False
        if remaining:
            self._by_group[group] = remaining
            return False
        del self._by_group[group]
        return True

    def callbacks(self, group: str) -> tuple[Callback, ...]:
        return self._by_group.get(group, ())

    def groups(self) -> frozenset[str]:
        return frozenset(self._by_group)

    def clear(self) -> None:
        self._by_group.clear()

    def __contains__(self, group: object) -> bool:
        return group in self._by_group

    @staticmethod
    def dispatch(callbacks: tuple[Callback, ...], group: str, payload: Any, sent_at: float) -> None:
        """Call each callback in join order; log (and survive) a callback's exception."""
        for callback in callbacks:
            try:
                callback(group, payload, sent_at)
            except Exception:
                logger.exception(
                    "broker subscriber callback %r failed for group %r", callback, group
                )
