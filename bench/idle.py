"""Idle WebSockets and hostile documents: what a worker holds per idle subscribed connection,
and how long the worst documents take to prepare.

``hold_idle(url, n)`` opens ``n`` graphql-transport-ws connections through nginx, each
acknowledged and subscribed, and keeps them open while the caller reads the workers' RSS.
``worst_documents()`` prepares (parse, limits, validation) the most expensive documents we know
how to build within the default limits, and returns each one's time on this machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

BATCH = 200


async def _open(url: str, index: int) -> ClientConnection:
    ws = await connect(url, subprotocols=["graphql-transport-ws"], max_queue=4)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init"}))
    ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if ack.get("type") != "connection_ack":
        raise RuntimeError(f"connection {index}: expected connection_ack, got {ack}")
    query = f'subscription {{ ticker(group: "idle-{index % 100}") {{ value }} }}'
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
    return ws


async def hold_idle(url: str, n: int, measure: Callable[[], Any]) -> tuple[int, Any]:
    """Open ``n`` idle subscribed connections, call ``measure()`` while all are open, close
    them. Returns how many opened and what ``measure`` returned."""
    clients: list[ClientConnection] = []
    try:
        while len(clients) < n:
            batch = min(BATCH, n - len(clients))
            opened = await asyncio.gather(
                *(_open(url, len(clients) + i) for i in range(batch)), return_exceptions=True
            )
            failures = [r for r in opened if isinstance(r, BaseException)]
            clients.extend(r for r in opened if not isinstance(r, BaseException))
            if failures:
                raise RuntimeError(
                    f"{len(failures)} of {batch} connections failed after {len(clients)} "
                    f"were open: {failures[0]!r}"
                )
        await asyncio.sleep(1.0)  # let the workers settle (allocations after the subscribe)
        return len(clients), measure()
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)


def worst_documents() -> list[tuple[str, int, float, str]]:
    """``(name, bytes, ms, verdict)`` for each hostile document, slowest first."""
    from service.engine.executor import PREPARE_INLINE_BYTES, Engine
    from service.settings import Settings
    from support.schemas import schema

    engine = Engine(schema, Settings())

    def chain(n: int) -> str:
        links = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n))
        return f"{{ ...F0 }} {links} fragment F{n} on Query {{ hello }}"

    def same_name(n: int) -> str:
        return "{ " + " ".join(f'hello(name: "{i}")' for i in range(n)) + " }"

    def same_subtree(n: int) -> str:
        return (
            "{ "
            + " ".join("item { name child { name blob child { name } } }" for _ in range(n))
            + " }"
        )

    def aliases(n: int) -> str:
        return "{ " + " ".join(f"a{i}: hello" for i in range(n)) + " }"

    documents = {
        "fragment chain x50": chain(50),
        "fragment chain x1000 (refused)": chain(1000),
        "same-name fields x64": same_name(64),
        "same-name fields x499 (refused)": same_name(499),
        "same subtree x64": same_subtree(64),
        "same subtree x20 (inline size)": same_subtree(20),
        "aliases x30": aliases(30),
        "95 KB, over max_tokens (refused)": aliases(7_800),
    }
    rows = []
    for name, query in documents.items():
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            entry = engine.cache.prepare(query)
            best = min(best, time.perf_counter() - started)
        verdict = entry.errors[0]["extensions"]["code"] if entry.errors else "ok"
        where = "loop" if len(query) <= PREPARE_INLINE_BYTES else "thread"
        rows.append((f"{name} [{where}]", len(query.encode()), best * 1000.0, verdict))
    return sorted(rows, key=lambda row: -row[2])
