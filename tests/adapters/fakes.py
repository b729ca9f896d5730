"""Fakes for adapter tests: a clock whose time only moves when a test moves it, and a transport
that records what the protocol wrote (in the manner of uvicorn's ``MockLoop`` and
``MockTransport``).

``FakeClock`` stands in for the event loop where the code under test reads time and arms
timers (``time``, ``call_later``, ``call_at``); tasks still run on the real running loop
(``create_task`` delegates), so async handlers work as in production. ``advance(seconds)``
moves the clock and runs every timer that came due, in deadline order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Coroutine
from typing import Any


class FakeTimer:
    """What ``call_later`` returns: ``cancel()`` it like an ``asyncio.TimerHandle``."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A loop stand-in for time and timers; see the module docstring."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, lambda: callback(*args))
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def pending_timers(self) -> list[float]:
        """Deadlines of the timers not yet run or cancelled."""
        return sorted(when for when, _, timer in self._timers if not timer.cancelled)

    def advance(self, seconds: float) -> None:
        """Move the clock by ``seconds``, running each timer that comes due."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback()
        self.now = target


class FakeTransport:
    """Records writes and flow-control calls; ``closed`` once the protocol closed it.

    With ``high_water`` set it behaves like an asyncio transport whose peer reads nothing: the
    bytes written stay buffered, ``protocol.pause_writing()`` is called when they first exceed
    the mark, and ``drain()`` (the peer reads everything) calls ``resume_writing()``.
    """

    def __init__(self, peer: Any = ("127.0.0.1", 5000), high_water: int | None = None) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.reading = True
        self.protocol: Any = None
        self.peer = peer
        self.high_water = high_water
        self.buffered = 0
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.written += data
        if self.high_water is not None:
            self.buffered += len(data)
            if self.buffered > self.high_water and not self.paused:
                self.paused = True
                self.protocol.pause_writing()

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def drain(self) -> None:
        """The peer read everything buffered."""
        self.buffered = 0
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def take(self) -> bytes:
        """What was written since the last call."""
        data = bytes(self.written)
        self.written.clear()
        return data
