"""Waiting for a condition with a deadline: the one polling helper of tests and benchmarks.

Nothing waits for something to happen by sleeping a fixed time. It polls instead: call
``check`` until it returns a truthy value (which is returned) or ``timeout_s`` seconds pass.
An exception raised by ``check`` counts as "not yet" (a socket still refusing, a row not written
yet); on timeout the ``TimeoutError`` names ``what`` was awaited and the last such exception,
which is also chained as its cause.

- :func:`poll_until` for synchronous code (``time.sleep`` between checks).
- :func:`apoll_until` inside an event loop; ``check`` may be a plain function or return an
  awaitable (a coroutine function, or a lambda returning a coroutine). An awaited check is cut
  off at the deadline, so a check that hangs cannot stretch the wait.

Either checks at least once, and once more at the deadline, however short ``timeout_s`` is.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["apoll_until", "poll_until"]

T = TypeVar("T")


def _timed_out(what: str, timeout_s: float, last_error: BaseException | None) -> TimeoutError:
    return TimeoutError(
        f"timed out after {timeout_s:g} s waiting for {what} (last error: {last_error!r})"
    )


def poll_until(
    check: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.02
) -> T:
    """Call ``check()`` every ``interval_s`` until it returns a truthy value; return that value.

    Raises ``TimeoutError`` naming ``what`` and ``check``'s last exception once ``timeout_s``
    seconds have passed.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = check()
        except Exception as exc:  # not yet: keep polling, report it on timeout
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(what, timeout_s, last_error) from last_error
        time.sleep(min(interval_s, remaining))


@overload
async def apoll_until(
    check: Callable[[], Awaitable[T]], *, timeout_s: float, what: str, interval_s: float = ...
) -> T: ...


@overload
async def apoll_until(
    check: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = ...
) -> T: ...


async def apoll_until(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.02,
) -> T:
    """Call ``check()`` (awaiting its result if it is awaitable) every ``interval_s`` until the
    result is truthy; return it.

    Raises ``TimeoutError`` naming ``what`` and ``check``'s last exception once ``timeout_s``
    seconds have passed; an awaited check still running at the deadline is cancelled.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                async with asyncio.timeout_at(deadline):
                    value = await result
            else:
                value = result
        except Exception as exc:  # not yet (or cut off at the deadline): report it on timeout
            last_error = exc
        else:
            if value:
                return value
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _timed_out(what, timeout_s, last_error) from last_error
        await asyncio.sleep(min(interval_s, remaining))
