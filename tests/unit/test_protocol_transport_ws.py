"""Table tests for the graphql-transport-ws server state machine (pure; time is a number).

Each case is a script: a list of (call on the machine, the actions it must return). Actions are
compared in a normalised form, with frames decoded from JSON, so key order does not matter.

Only what is particular to graphql-transport-ws is here (ping/pong, the 4401 and 4409 closes,
4400 for malformed messages, its frames); the rules it shares with graphql-ws (initialisation,
4429, 4408, 4403, 1009, keep-alive timing, the operation lifecycle, closes) are in
``test_protocol_shared.py``, whose rows ``TABLE`` adds to this file's own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.protocols.codes import CloseCode
from service.protocols.graphql_transport_ws import GraphQLTransportWSConnection
from service.protocols.graphql_ws import GraphQLWSConnection
from service.protocols.negotiate import choose_subprotocol, make_connection
from service.protocols.ws_machine import TRANSITIONS, ConnectionEvent, ConnectionState
from service.protocols.ws_messages import MAX_CLOSE_REASON_BYTES, Action, Close, Send, encode
from tests.unit.test_protocol_shared import whole_table
from tests.unit.ws_cases import (
    TRANSPORT,
    Call,
    Case,
    Norm,
    accept,
    closes,
    init,
    next_,
    recv,
    run_steps,
    send,
    start,
    tick,
)


def subscribe(id: str, **payload: Any) -> dict[str, Any]:
    return {"type": "subscribe", "id": id, "payload": {"query": "{ hello }", **payload}}


INIT_MSG = {"type": "connection_init"}
HANDSHAKE: list[tuple[Call, list[Norm]]] = [
    (recv(INIT_MSG), [init()]),
    (accept(), [send(type="connection_ack")]),
]
RESULT = {"data": {"hello": "world"}}


CASES: dict[str, Case] = {
    # -- keep-alive: ping, none right at the ack -------------------------------------------------
    "keep-alive pings every keepalive_s after the ack, none right at the ack": Case(
        [
            (recv(INIT_MSG), [init()]),
            (tick(0.5), []),
            (accept(now=1.0), [send(type="connection_ack")]),
            (tick(10.9), []),
            (tick(11.0), [send(type="ping")]),
            (tick(11.0), []),
            (tick(21.5), [send(type="ping")]),
            (tick(30.9), []),
            (tick(31.0), [send(type="ping")]),
        ],
        {"keepalive_s": 10.0},
    ),
    # -- Ping / Pong ----------------------------------------------------------------------------
    "ping before init gets pong": Case([(recv({"type": "ping"}), [send(type="pong")])]),
    "ping payload is echoed in pong": Case(
        [(recv({"type": "ping", "payload": {"t": 1}}), [send(type="pong", payload={"t": 1})])]
    ),
    "ping while on_connect pending gets pong": Case(
        [(recv(INIT_MSG), [init()]), (recv({"type": "ping"}), [send(type="pong")])]
    ),
    "ping after ack gets pong": Case([*HANDSHAKE, (recv({"type": "ping"}), [send(type="pong")])]),
    "client pong is ignored": Case(
        [
            (recv({"type": "pong"}), []),
            (recv({"type": "pong", "payload": {"x": 1}}), []),
            *HANDSHAKE,
            (recv({"type": "pong"}), []),
        ]
    ),
    # -- close codes of Subscribe ------------------------------------------------------------------
    "subscribe before init closes 4401": Case(
        [(recv(subscribe("1")), [closes(4401, "Unauthorized")])]
    ),
    "subscribe while on_connect pending closes 4401": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(subscribe("1")), [closes(4401, "Unauthorized")]),
            (accept(), []),
        ]
    ),
    "subscribe with an active id closes 4409": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("dup")), [start("dup")]),
            (recv(subscribe("dup")), [closes(4409, "Subscriber for dup already exists")]),
            (next_("dup", RESULT), []),
        ]
    ),
}

#: Malformed client messages; every one closes with 4400 and this reason, before or after ack.
INVALID: dict[str, tuple[str, str]] = {
    "not JSON": ("{type: ping}", "not valid JSON"),
    "empty frame": ("", "not valid JSON"),
    "too deeply nested JSON": ("[" * 100_000, "not valid JSON"),
    "JSON array": ('[{"type": "ping"}]', "expected a JSON object, got list"),
    "JSON string": ('"ping"', "expected a JSON object, got str"),
    "JSON null": ("null", "expected a JSON object, got NoneType"),
    "missing type": ('{"id": "1"}', "missing type"),
    "type not a string": ('{"type": 1}', "type must be a string"),
    "unknown type": ('{"type": "foo"}', "unknown type 'foo'"),
    "legacy start type": ('{"type": "start", "id": "1"}', "unknown type 'start'"),
    "server-only type next": (
        '{"type": "next", "id": "1"}',
        "unexpected type 'next' from a client",
    ),
    "server-only type ack": (
        '{"type": "connection_ack"}',
        "unexpected type 'connection_ack' from a client",
    ),
    "init payload not an object": (
        '{"type": "connection_init", "payload": "token"}',
        "connection_init payload must be an object or null",
    ),
    "ping payload not an object": (
        '{"type": "ping", "payload": [1]}',
        "ping payload must be an object or null",
    ),
    "pong payload not an object": (
        '{"type": "pong", "payload": 2}',
        "pong payload must be an object or null",
    ),
    "subscribe without id": (
        '{"type": "subscribe", "payload": {"query": "{ a }"}}',
        "subscribe id must be a non-empty string",
    ),
    "subscribe with empty id": (
        '{"type": "subscribe", "id": "", "payload": {"query": "{ a }"}}',
        "subscribe id must be a non-empty string",
    ),
    "subscribe with numeric id": (
        '{"type": "subscribe", "id": 1, "payload": {"query": "{ a }"}}',
        "subscribe id must be a non-empty string",
    ),
    "subscribe without payload": (
        '{"type": "subscribe", "id": "1"}',
        "subscribe payload must be an object",
    ),
    "subscribe payload not an object": (
        '{"type": "subscribe", "id": "1", "payload": "{ a }"}',
        "subscribe payload must be an object",
    ),
    "subscribe without query": (
        '{"type": "subscribe", "id": "1", "payload": {}}',
        "subscribe payload.query must be a string",
    ),
    "subscribe query not a string": (
        '{"type": "subscribe", "id": "1", "payload": {"query": {"kind": "Document"}}}',
        "subscribe payload.query must be a string",
    ),
    "subscribe variables not an object": (
        '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "variables": [1]}}',
        "subscribe payload.variables must be an object or null",
    ),
    "subscribe operationName not a string": (
        '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "operationName": 3}}',
        "subscribe payload.operationName must be a string or null",
    ),
    "subscribe extensions not an object": (
        '{"type": "subscribe", "id": "1", "payload": {"query": "{ a }", "extensions": "x"}}',
        "subscribe payload.extensions must be an object or null",
    ),
    "complete without id": ('{"type": "complete"}', "complete id must be a non-empty string"),
}


def connection(**settings: Any) -> GraphQLTransportWSConnection:
    return GraphQLTransportWSConnection(now=0.0, **settings)


#: This protocol's own rows and the shared ones.
TABLE = whole_table(TRANSPORT, CASES)


def run_case(case: Case) -> list[Action]:
    """Run a case's steps, asserting each step's actions and the close invariants; return every
    action produced."""
    conn = connection(**case.settings)
    return run_steps(conn, case)


@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str) -> None:
    run_case(CASES[name])


@pytest.mark.parametrize("acked", [False, True], ids=["before-ack", "after-ack"])
@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_message_closes_4400(name: str, acked: bool) -> None:
    text, problem = INVALID[name]
    conn = connection()
    if acked:
        conn.receive_text(json.dumps(INIT_MSG), 0.0)
        conn.accept(None, 0.0)
        assert conn.receive_text(json.dumps(subscribe("live")), 0.0)
    actions = conn.receive_text(text, 0.0)
    assert actions == [Close(4400, f"Invalid message received: {problem}")]
    assert conn.closed and conn.active_ids == frozenset()
    assert conn.receive_text(json.dumps({"type": "ping"}), 0.0) == []


def test_every_close_code_is_covered_by_the_table() -> None:
    codes = {
        action.code
        for case in TABLE.values()
        for action in run_case(case)
        if isinstance(action, Close)
    }
    assert {4400, 4401, 4403, 4408, 4409, 4429, 1009, 1000, 1001} <= codes


def test_every_server_message_type_is_produced_by_the_table() -> None:
    types = {
        json.loads(action.text)["type"]
        for case in TABLE.values()
        for action in run_case(case)
        if isinstance(action, Send)
    }
    assert types == {"connection_ack", "ping", "pong", "next", "error", "complete"}


def test_close_codes_are_named_as_the_protocol_names_them() -> None:
    assert CloseCode.BadRequest == CloseCode.InvalidMessage == 4400
    assert CloseCode.Unauthorized == 4401
    assert CloseCode.Forbidden == 4403
    assert CloseCode.SubprotocolNotAcceptable == 4406
    assert CloseCode.ConnectionInitialisationTimeout == 4408
    assert CloseCode.SubscriberAlreadyExists == 4409
    assert CloseCode.TooManyInitialisationRequests == 4429
    assert CloseCode.InternalServerError == 4500
    assert CloseCode.MessageTooBig == 1009


# -- state, deadlines and properties ---------------------------------------------------------------


def test_states_and_deadlines_through_a_connection_lifetime() -> None:
    conn = GraphQLTransportWSConnection(now=100.0, init_timeout_s=5.0, keepalive_s=2.0)
    assert conn.state is ConnectionState.WAITING_INIT
    assert (conn.acknowledged, conn.closed) == (False, False)
    assert conn.next_deadline() == 105.0

    conn.receive_text(json.dumps(INIT_MSG), 101.0)
    assert conn.state is ConnectionState.INIT_PENDING
    assert conn.next_deadline() is None
    assert not conn.acknowledged

    conn.accept(None, 103.0)
    assert conn.acknowledged and conn.state is ConnectionState.ACKNOWLEDGED
    assert conn.next_deadline() == 105.0
    conn.tick(105.0)
    assert conn.next_deadline() == 107.0

    conn.receive_text(json.dumps(subscribe("a")), 106.0)
    conn.receive_text(json.dumps(subscribe("b")), 106.0)
    assert conn.active_ids == frozenset({"a", "b"})
    conn.complete("a")
    assert conn.active_ids == frozenset({"b"})

    conn.close(1001, "going away")
    assert conn.closed and not conn.acknowledged
    assert conn.state is ConnectionState.CLOSED
    assert conn.next_deadline() is None
    assert conn.active_ids == frozenset()


def test_transition_table_is_the_only_way_to_move() -> None:
    assert TRANSITIONS[ConnectionState.WAITING_INIT, ConnectionEvent.CLIENT_INIT] is (
        ConnectionState.INIT_PENDING
    )
    assert not any(state is ConnectionState.CLOSED for state, _ in TRANSITIONS)
    assert (ConnectionState.ACKNOWLEDGED, ConnectionEvent.ACCEPT) not in TRANSITIONS


# -- sizes, encodings and reasons ------------------------------------------------------------------


def test_long_close_reasons_are_cut_to_fit_a_close_frame() -> None:
    conn = connection()
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    long_id = "ü" * 200
    conn.receive_text(json.dumps(subscribe(long_id)), 0.0)
    [action] = conn.receive_text(json.dumps(subscribe(long_id)), 0.0)
    assert isinstance(action, Close) and action.code == 4409
    assert action.reason.startswith("Subscriber for üü")
    assert len(action.reason.encode()) <= MAX_CLOSE_REASON_BYTES
    assert len(action.reason.encode()) >= MAX_CLOSE_REASON_BYTES - 1  # cut, not dropped


def test_lone_surrogates_in_close_reasons_are_replaced() -> None:
    conn = connection()
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    message = '{"type":"subscribe","id":"\\ud800","payload":{"query":"{ a }"}}'
    conn.receive_text(message, 0.0)
    [action] = conn.receive_text(message, 0.0)
    assert action == Close(4409, "Subscriber for ? already exists")


def test_unknown_type_in_reason_is_clipped() -> None:
    [action] = connection().receive_text(json.dumps({"type": "x" * 500}), 0.0)
    assert action == Close(4400, "Invalid message received: unknown type '" + "x" * 36 + "...")


def test_frames_are_compact_json() -> None:
    assert encode({"type": "next", "id": "1", "payload": {"data": {"a": [1, 2]}}}) == (
        '{"type":"next","id":"1","payload":{"data":{"a":[1,2]}}}'
    )
    conn = connection()
    assert conn.receive_text('{"type":"ping"}', 0.0) == [Send('{"type":"pong"}')]


def test_injected_encoder_encodes_every_frame() -> None:
    seen: list[dict[str, Any]] = []

    def encoder(message: Any) -> str:
        seen.append(dict(message))
        return "ENC"

    conn = connection(encoder=encoder, keepalive_s=1.0)
    assert conn.receive_text('{"type":"ping"}', 0.0) == [Send("ENC")]
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    assert conn.accept(None, 0.0) == [Send("ENC")]
    assert conn.tick(1.0) == [Send("ENC")]
    assert [m["type"] for m in seen] == ["pong", "connection_ack", "ping"]


# -- negotiation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["graphql-transport-ws"], "graphql-transport-ws"),
        (["graphql-ws"], "graphql-ws"),
        (["graphql-ws", "graphql-transport-ws"], "graphql-transport-ws"),
        (["graphql-transport-ws", "graphql-ws"], "graphql-transport-ws"),
        ([" graphql-ws "], "graphql-ws"),
        (["chat", "graphql-ws"], "graphql-ws"),
        (["GraphQL-WS"], None),
        (["chat"], None),
        ([], None),
    ],
)
def test_choose_subprotocol(offered: list[str], chosen: str | None) -> None:
    assert choose_subprotocol(offered) == chosen


def test_make_connection_builds_the_machine_for_a_subprotocol() -> None:
    transport = make_connection("graphql-transport-ws", now=0.0, max_operations=7)
    legacy = make_connection("graphql-ws", now=0.0)
    assert type(transport) is GraphQLTransportWSConnection
    assert type(legacy) is GraphQLWSConnection
    assert transport.subprotocol == "graphql-transport-ws"
    assert legacy.subprotocol == "graphql-ws"
    with pytest.raises(ValueError, match="unknown GraphQL WebSocket subprotocol 'chat'"):
        make_connection("chat", now=0.0)
