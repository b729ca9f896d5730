"""Table tests for the legacy graphql-ws (subscriptions-transport-ws) server state machine.

Pure and fast: time is a number. Each case is a script of (call on the machine, the actions it
must return); frames are compared decoded. One test replays the whole table and asserts the
machine never produced a ``ping`` or ``pong`` frame, which this protocol does not have.

Only what is particular to graphql-ws is here (``connection_error``, ``ka`` with the ack, a
repeated ``start``, operations queued before the ack, ``connection_terminate``, bad input that
keeps the socket open); the rules it shares with graphql-transport-ws (initialisation, 4429,
4408, 4403, 1009, keep-alive timing, the operation lifecycle, closes) are in
``test_protocol_shared.py``, whose rows ``TABLE`` adds to this file's own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.protocols.graphql_ws import CONNECTION_NOT_INITIALISED, GraphQLWSConnection
from service.protocols.ws_machine import ConnectionState
from service.protocols.ws_messages import TOO_MANY_OPERATIONS, Action, Close, Send
from tests.unit.test_protocol_shared import whole_table
from tests.unit.ws_cases import (
    LEGACY,
    Call,
    Case,
    Norm,
    accept,
    closes,
    init,
    next_,
    recv,
    reject,
    run_steps,
    send,
    start,
    stop,
    tick,
)


def error_frame(message: str, id: str | None = None) -> Norm:
    if id is None:
        return send(type="error", payload={"message": message})
    return send(type="error", id=id, payload={"message": message})


def start_msg(id: Any, **payload: Any) -> dict[str, Any]:
    return {"type": "start", "id": id, "payload": {"query": "{ hello }", **payload}}


def stop_msg(id: Any) -> dict[str, Any]:
    return {"type": "stop", "id": id}


INVALID = "Invalid message received: "
INIT_MSG = {"type": "connection_init"}
TERMINATE_MSG = {"type": "connection_terminate"}
ACK = send(type="connection_ack")
KA = send(type="ka")
HANDSHAKE: list[tuple[Call, list[Norm]]] = [(recv(INIT_MSG), [init()]), (accept(), [ACK])]
RESULT = {"data": {"hello": "world"}}


CASES: dict[str, Case] = {
    # -- GQL_CONNECTION_INIT with a bad payload ----------------------------------------------------
    "init with a non-object payload gets connection_error and is ignored": Case(
        [
            (
                recv({"type": "connection_init", "payload": "token"}),
                [
                    send(
                        type="connection_error",
                        payload={"message": INVALID + "connection_init payload must be an object"},
                    )
                ],
            ),
            (tick(3.0), [closes(4408, "Connection initialisation timeout")]),
        ]
    ),
    "a valid init after an ignored one is accepted": Case(
        [
            (
                recv({"type": "connection_init", "payload": [1]}),
                [
                    send(
                        type="connection_error",
                        payload={"message": INVALID + "connection_init payload must be an object"},
                    )
                ],
            ),
            *HANDSHAKE,
        ]
    ),
    # -- GQL_CONNECTION_KEEP_ALIVE: ka right after the ack -----------------------------------------
    "ka right after the ack, then every keepalive_s": Case(
        [
            (recv(INIT_MSG), [init()]),
            (tick(1.0), []),
            (accept(now=2.0), [ACK, KA]),
            (tick(6.9), []),
            (tick(7.0), [KA]),
            (tick(7.0), []),
            (tick(12.0), [KA]),
            (tick(40.0), [KA]),
            (tick(44.9), []),
            (tick(45.0), [KA]),
        ],
        {"keepalive_s": 5.0},
    ),
    # -- GQL_START with an id that is already active -----------------------------------------------
    "start with an active id stops the old operation and starts the new one": Case(
        [
            *HANDSHAKE,
            (recv(start_msg("1")), [start("1")]),
            (recv(start_msg("1", query="{ other }")), [stop("1"), start("1", "{ other }")]),
            (next_("1", RESULT), [send(type="data", id="1", payload=RESULT)]),
        ]
    ),
    "start with an active id and a bad payload stops the old one and reports the error": Case(
        [
            *HANDSHAKE,
            (recv(start_msg("1")), [start("1")]),
            (
                recv({"type": "start", "id": "1", "payload": {}}),
                [
                    stop("1"),
                    error_frame(INVALID + "start payload.query must be a string", "1"),
                ],
            ),
            (next_("1", RESULT), []),
        ]
    ),
    # -- operations sent before the ack (the reference client does this) ---------------------------
    "start before any init gets an error and does not run": Case(
        [
            (recv(start_msg("1")), [error_frame(CONNECTION_NOT_INITIALISED, "1")]),
            *HANDSHAKE,
            (next_("1", RESULT), []),
        ]
    ),
    "starts while on_connect is pending run after the ack and first ka": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1")), []),
            (recv(start_msg("2", variables={"a": 1})), []),
            (accept(now=0.0), [ACK, KA, start("1"), start("2", variables={"a": 1})]),
            (next_("2", RESULT), [send(type="data", id="2", payload=RESULT)]),
        ],
        {"keepalive_s": 10.0},
    ),
    "stop of a queued start sends complete and it never runs": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1")), []),
            (recv(start_msg("2")), []),
            (recv(stop_msg("1")), [send(type="complete", id="1")]),
            (accept(), [ACK, start("2")]),
        ]
    ),
    "a queued start repeated with the same id keeps the later one": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1", query="{ a }")), []),
            (recv(start_msg("2")), []),
            (recv(start_msg("1", query="{ b }")), []),
            (accept(), [ACK, start("2"), start("1", "{ b }")]),
        ]
    ),
    "queued starts count against max_operations": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1")), []),
            (recv(start_msg("2")), [error_frame(TOO_MANY_OPERATIONS, "2")]),
            (accept(), [ACK, start("1")]),
        ],
        {"max_operations": 1},
    ),
    "reject drops queued starts": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1")), []),
            (
                reject("no"),
                [send(type="connection_error", payload={"message": "no"}), closes(4403, "no")],
            ),
            (next_("1", RESULT), []),
        ]
    ),
    # -- GQL_CONNECTION_TERMINATE ------------------------------------------------------------------
    "terminate stops every active operation, then closes 1000": Case(
        [
            *HANDSHAKE,
            (recv(start_msg("a")), [start("a")]),
            (recv(start_msg("b")), [start("b")]),
            (
                recv(TERMINATE_MSG),
                [stop("a"), stop("b"), closes(1000, "connection terminated by client")],
            ),
            (next_("a", RESULT), []),
        ]
    ),
    "terminate before init closes 1000": Case(
        [(recv(TERMINATE_MSG), [closes(1000, "connection terminated by client")])]
    ),
    "terminate while on_connect pending drops queued starts": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(start_msg("1")), []),
            (recv(TERMINATE_MSG), [closes(1000, "connection terminated by client")]),
            (accept(), []),
        ]
    ),
    # -- bad input that keeps the socket open ------------------------------------------------------
    "non-JSON gets connection_error and the socket stays open": Case(
        [
            (
                recv("{type: start}"),
                [
                    send(
                        type="connection_error",
                        payload={"message": INVALID + "not valid JSON"},
                    )
                ],
            ),
            *HANDSHAKE,
        ]
    ),
    "too deeply nested JSON gets connection_error": Case(
        [
            (
                recv("[" * 100_000),
                [
                    send(
                        type="connection_error",
                        payload={"message": INVALID + "not valid JSON"},
                    )
                ],
            )
        ]
    ),
    "a JSON array gets connection_error": Case(
        [
            *HANDSHAKE,
            (
                recv("[1]"),
                [
                    send(
                        type="connection_error",
                        payload={"message": INVALID + "expected a JSON object, got list"},
                    )
                ],
            ),
            (recv(start_msg("1")), [start("1")]),
        ]
    ),
    "unknown type gets an error with the id": Case(
        [
            *HANDSHAKE,
            (
                recv({"type": "subscribe", "id": "7"}),
                [error_frame("Invalid message type: 'subscribe'", "7")],
            ),
        ]
    ),
    "missing type gets an error": Case(
        [(recv({"id": "7"}), [error_frame("Invalid message type: None", "7")])]
    ),
    "non-string type gets an error without an unusable id": Case(
        [(recv({"type": 5, "id": 3}), [error_frame("Invalid message type: 5")])]
    ),
    "server-only types from the client get an error": Case(
        [
            *HANDSHAKE,
            (recv({"type": "data", "id": "1"}), [error_frame("Invalid message type: 'data'", "1")]),
            (recv({"type": "ka"}), [error_frame("Invalid message type: 'ka'")]),
        ]
    ),
    "client ping is an unknown type: error, never pong": Case(
        [
            (recv({"type": "ping"}), [error_frame("Invalid message type: 'ping'")]),
            *HANDSHAKE,
            (recv({"type": "ping", "payload": {}}), [error_frame("Invalid message type: 'ping'")]),
            (recv({"type": "pong"}), [error_frame("Invalid message type: 'pong'")]),
        ]
    ),
    "start with a bad id gets an error without an id": Case(
        [
            *HANDSHAKE,
            (
                recv(start_msg(None)),
                [error_frame(INVALID + "start id must be a non-empty string")],
            ),
            (
                recv(start_msg("")),
                [error_frame(INVALID + "start id must be a non-empty string")],
            ),
            (
                recv(start_msg(1)),
                [error_frame(INVALID + "start id must be a non-empty string")],
            ),
        ]
    ),
    "start with a bad payload gets an error naming the field": Case(
        [
            *HANDSHAKE,
            (
                recv({"type": "start", "id": "1"}),
                [error_frame(INVALID + "start payload must be an object", "1")],
            ),
            (
                recv({"type": "start", "id": "2", "payload": {"query": 1}}),
                [error_frame(INVALID + "start payload.query must be a string", "2")],
            ),
            (
                recv(start_msg("3", variables=[1])),
                [
                    error_frame(
                        INVALID + "start payload.variables must be an object or null",
                        "3",
                    )
                ],
            ),
            (
                recv(start_msg("4", operationName=1)),
                [
                    error_frame(
                        INVALID + "start payload.operationName must be a string or null",
                        "4",
                    )
                ],
            ),
            (
                recv(start_msg("5", extensions="x")),
                [
                    error_frame(
                        INVALID + "start payload.extensions must be an object or null",
                        "5",
                    )
                ],
            ),
            (recv(start_msg("6")), [start("6")]),
        ]
    ),
    "stop with a bad id gets an error": Case(
        [
            *HANDSHAKE,
            (
                recv(stop_msg(None)),
                [error_frame(INVALID + "stop id must be a non-empty string")],
            ),
        ]
    ),
}


#: This protocol's own rows and the shared ones.
TABLE = whole_table(LEGACY, CASES)


def run_case(case: Case) -> list[Action]:
    """Run a case's steps, asserting each step's actions and the close invariants; return every
    action produced."""
    conn = GraphQLWSConnection(now=0.0, **case.settings)
    return run_steps(conn, case)


@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str) -> None:
    run_case(CASES[name])


def test_never_sends_ping_or_pong_across_the_whole_table() -> None:
    frames = [
        json.loads(action.text)
        for case in TABLE.values()
        for action in run_case(case)
        if isinstance(action, Send)
    ]
    assert len(frames) > 50
    types = {frame["type"] for frame in frames}
    assert not types & {"ping", "pong"}
    # The table drives every message type the legacy server sends.
    assert types == {"connection_ack", "connection_error", "ka", "data", "error", "complete"}


def test_every_close_code_is_covered_by_the_table() -> None:
    codes = {
        action.code
        for case in TABLE.values()
        for action in run_case(case)
        if isinstance(action, Close)
    }
    assert codes == {1000, 1001, 1003, 1009, 4403, 4408, 4429}


def test_states_deadlines_and_active_ids() -> None:
    conn = GraphQLWSConnection(now=10.0, init_timeout_s=2.0, keepalive_s=4.0)
    assert conn.subprotocol == "graphql-ws"
    assert conn.state is ConnectionState.WAITING_INIT and conn.next_deadline() == 12.0

    conn.receive_text(json.dumps(INIT_MSG), 11.0)
    conn.receive_text(json.dumps(start_msg("q")), 11.0)
    assert conn.state is ConnectionState.INIT_PENDING and conn.next_deadline() is None
    assert conn.active_ids == frozenset()  # queued, not started

    conn.accept(None, 13.0)
    assert conn.acknowledged and conn.next_deadline() == 17.0
    assert conn.active_ids == frozenset({"q"})

    conn.receive_text(json.dumps(TERMINATE_MSG), 14.0)
    assert conn.closed and not conn.acknowledged
    assert conn.active_ids == frozenset() and conn.next_deadline() is None


def test_long_reject_reason_is_cut_for_the_close_frame_but_whole_in_connection_error() -> None:
    reason = "denied: " + "z" * 300
    conn = GraphQLWSConnection(now=0.0)
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    sent, closed = conn.reject(reason, 0.0)
    assert isinstance(sent, Send) and json.loads(sent.text)["payload"]["message"] == reason
    assert closed == Close(4403, reason[:123])


def test_frames_are_compact_json() -> None:
    conn = GraphQLWSConnection(now=0.0, keepalive_s=1.0)
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    assert conn.accept(None, 0.0) == [Send('{"type":"connection_ack"}'), Send('{"type":"ka"}')]
