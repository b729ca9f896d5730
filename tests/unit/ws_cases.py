"""Shared vocabulary of the WebSocket protocol table tests (both subprotocols).

A case is a script: (call on the machine, the actions it must return). Actions are compared in a
normalised form with frames decoded from JSON, so key order does not matter.

``TRANSPORT`` and ``LEGACY`` describe where the two subprotocols differ, so that one table
(``test_protocol_shared.py``) can state a rule once and check it against both machines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.protocols.graphql_transport_ws import GraphQLTransportWSConnection
from service.protocols.graphql_ws import GraphQLWSConnection
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


# -- the two subprotocols, for the shared table (test_protocol_shared.py) -------------------------


@dataclass(frozen=True)
class Subprotocol:
    """How one subprotocol spells the rules both share: its machine, the message types where the
    two differ, and builders for client messages and expected actions."""

    machine: type[ServerConnection]
    start_type: str  # client message that starts an operation
    end_type: str  # client message that ends one
    result_type: str  # server message carrying one result
    keepalive_type: str  # server keep-alive message
    binary_close_code: int  # close code for a binary frame
    #: graphql-ws answers a client ``stop`` with ``complete`` (graphql-transport-ws does not).
    completes_on_client_end: bool
    #: graphql-ws sends the first error as the ``error`` payload (graphql-transport-ws the list).
    first_error_only: bool
    #: graphql-ws sends ``connection_error`` before the 4403 close of a rejected init.
    announces_rejection: bool
    #: graphql-ws sends its first ``ka`` right after the ack (graphql-transport-ws waits).
    keepalive_with_ack: bool

    @property
    def subprotocol(self) -> str:
        return self.machine.subprotocol

    def connection(self, **settings: Any) -> ServerConnection:
        return self.machine(now=0.0, **settings)

    # client messages

    def op(self, id: Any, **payload: Any) -> dict[str, Any]:
        """The client message starting operation ``id`` (``{ hello }`` unless told)."""
        return {"type": self.start_type, "id": id, "payload": {"query": "{ hello }", **payload}}

    def end(self, id: Any) -> dict[str, Any]:
        """The client message ending operation ``id``."""
        return {"type": self.end_type, "id": id}

    # expected actions

    def ack(self, payload: dict[str, Any] | None = None, *, keepalive: bool = False) -> list[Norm]:
        """What ``accept(payload)`` returns (no operations queued)."""
        ack = (
            send(type="connection_ack")
            if payload is None
            else send(type="connection_ack", payload=payload)
        )
        return [ack, self.keepalive] if keepalive and self.keepalive_with_ack else [ack]

    @property
    def keepalive(self) -> Norm:
        return send(type=self.keepalive_type)

    def result(self, id: str, payload: dict[str, Any]) -> Norm:
        return send(type=self.result_type, id=id, payload=payload)

    def error(self, id: str, errors: list[dict[str, Any]]) -> Norm:
        return send(type="error", id=id, payload=errors[0] if self.first_error_only else errors)

    def client_ended(self, id: str) -> list[Norm]:
        """What the client's ``end(id)`` returns for an active operation."""
        return (
            [stop(id), send(type="complete", id=id)] if self.completes_on_client_end else [stop(id)]
        )

    def rejected(self, reason: str) -> list[Norm]:
        """What ``reject(reason)`` returns."""
        closing = closes(4403, reason or "Forbidden")
        if self.announces_rejection:
            return [send(type="connection_error", payload={"message": reason}), closing]
        return [closing]


TRANSPORT = Subprotocol(
    machine=GraphQLTransportWSConnection,
    start_type="subscribe",
    end_type="complete",
    result_type="next",
    keepalive_type="ping",
    binary_close_code=4400,
    completes_on_client_end=False,
    first_error_only=False,
    announces_rejection=False,
    keepalive_with_ack=False,
)
LEGACY = Subprotocol(
    machine=GraphQLWSConnection,
    start_type="start",
    end_type="stop",
    result_type="data",
    keepalive_type="ka",
    binary_close_code=1003,
    completes_on_client_end=True,
    first_error_only=True,
    announces_rejection=True,
    keepalive_with_ack=True,
)
PROTOCOLS = [TRANSPORT, LEGACY]
