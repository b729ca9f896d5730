"""``support.polling``: the value returned, the error on timeout, and the deadline kept even by an
awaited check that hangs. Deadlines here are a fraction of a second."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest

from support.polling import apoll_until, poll_until


def counting(truthy_from: int) -> tuple[list[int], Callable[[], int]]:
    """A check that fails with ``ValueError`` twice, then returns 0 until call
    ``truthy_from``, then the call number."""
    calls: list[int] = []
    counter = itertools.count(1)

    def check() -> int:
        n = next(counter)
        calls.append(n)
        if n <= 2:
            raise ValueError(f"not yet {n}")
        return n if n >= truthy_from else 0

    return calls, check


def test_poll_until_returns_the_first_truthy_value() -> None:
    calls, check = counting(truthy_from=4)
    assert poll_until(check, timeout_s=5, what="x", interval_s=0.001) == 4
    assert calls == [1, 2, 3, 4]


def test_poll_until_names_what_and_the_last_error_on_timeout() -> None:
    def check() -> bool:
        raise ConnectionRefusedError("still down")

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"after 0.05 s waiting for the thing .*still down"):
        poll_until(check, timeout_s=0.05, what="the thing", interval_s=0.01)
    assert 0.05 <= time.monotonic() - started < 1.0


def test_poll_until_checks_once_even_without_time() -> None:
    assert poll_until(lambda: "ready", timeout_s=0, what="x") == "ready"
    with pytest.raises(TimeoutError, match="last error: None"):
        poll_until(lambda: False, timeout_s=0, what="x")


async def test_apoll_until_takes_sync_and_async_checks() -> None:
    calls, check = counting(truthy_from=3)
    assert await apoll_until(check, timeout_s=5, what="x", interval_s=0.001) == 3
    assert calls == [1, 2, 3]

    async def ready() -> str:
        return "yes"

    assert await apoll_until(ready, timeout_s=1, what="x") == "yes"
    assert await apoll_until(lambda: ready(), timeout_s=1, what="x") == "yes"


async def test_apoll_until_cuts_off_a_hanging_check_at_the_deadline() -> None:
    never = asyncio.Event()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="waiting for the event"):
        await apoll_until(never.wait, timeout_s=0.05, what="the event")
    assert time.monotonic() - started < 1.0


async def test_apoll_until_chains_the_last_error() -> None:
    async def check() -> bool:
        raise KeyError("missing")

    with pytest.raises(TimeoutError) as caught:
        await apoll_until(check, timeout_s=0.02, what="x", interval_s=0.005)
    assert isinstance(caught.value.__cause__, KeyError)
