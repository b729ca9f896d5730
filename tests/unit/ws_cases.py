"""Shared vocabulary of the WebSocket protocol table tests (both subprotocols).

A case is a script: (call on the machine, the actions it must return). Actions are compared in a
normalised form with frames decoded from JSON, so key order does not matter.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.protocols.ws_machine import ServerConnection
from service.protocols.ws_messages import Action, Close, Init, Send, Start, Stop

Norm = tuple[Any, ...]
Call = Callable[[ServerConnection], list[Action]]


def norm(action: Action) -> Norm:
    """An action as a comparable tuple; Send frames are decoded."""
    match action:
        case Send(text=text):
            return ("send", json.loads(text))
        case Close(code=code, reason=reason):
            return ("close", code, reason)
        case Init(payload=payload):
            return ("init", payload)
        case Start(id=id, payload=payload):
            return ("start", id, payload)
        case Stop(id=id):
            return ("stop", id)
    raise AssertionError(f"not an action: {action!r}")


@dataclass
class Case:
    steps: list[tuple[Call, list[Norm]]]
    settings: dict[str, Any] = field(default_factory=dict)


def run_steps(conn: ServerConnection, case: Case) -> list[Action]:
    """Run a case's steps on ``conn``, asserting each step's actions and the close invariants;
    return every action produced."""
    produced: list[Action] = []
    for index, (call, expected) in enumerate(case.steps):
        actions = call(conn)
        assert [norm(a) for a in actions] == expected, f"step {index}"
        for action in actions[:-1]:
            assert not isinstance(action, Close), f"step {index}: Close must be the last action"
        if actions and isinstance(actions[-1], Close):
            assert conn.closed and conn.next_deadline() is None
            assert conn.active_ids == frozenset()
        produced.extend(actions)
    return produced


# -- calls ----------------------------------------------------------------------------------------


def recv(message: dict[str, Any] | str, now: float = 0.0) -> Call:
    text = message if isinstance(message, str) else json.dumps(message)
    return lambda c: c.receive_text(text, now)


def receive_bytes(data: bytes, now: float = 0.0) -> Call:
    return lambda c: c.receive_bytes(data, now)


def accept(payload: dict[str, Any] | None = None, now: float = 0.0) -> Call:
    return lambda c: c.accept(payload, now)


def reject(reason: str, now: float = 0.0) -> Call:
    return lambda c: c.reject(reason, now)


def next_(id: str, result: dict[str, Any]) -> Call:
    return lambda c: c.next(id, result)


def error(id: str, errors: list[dict[str, Any]]) -> Call:
    return lambda c: c.error(id, errors)


def complete(id: str) -> Call:
    return lambda c: c.complete(id)


def close(code: int, reason: str) -> Call:
    return lambda c: c.close(code, reason)


def tick(now: float) -> Call:
    return lambda c: c.tick(now)


# -- expected actions -----------------------------------------------------------------------------


def send(**message: Any) -> Norm:
    return ("send", message)


def closes(code: int, reason: str) -> Norm:
    return ("close", code, reason)


def init(payload: dict[str, Any] | None = None) -> Norm:
    return ("init", payload or {})


def start(
    id: str,
    query: str = "{ hello }",
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    extensions: dict[str, Any] | None = None,
) -> Norm:
    payload = {
        "query": query,
        "variables": variables,
        "operationName": operation_name,
        "extensions": extensions,
    }
    return ("start", id, payload)


def stop(id: str) -> Norm:
    return ("stop", id)
