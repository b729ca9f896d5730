"""Table tests for the graphql-transport-ws server state machine (pure; time is a number).

Each case is a script: a list of (call on the machine, the actions it must return). Actions are
compared in a normalised form, with frames decoded from JSON, so key order does not matter.
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
from service.protocols.ws_messages import (
    MAX_CLOSE_REASON_BYTES,
    TOO_MANY_OPERATIONS,
    Action,
    Close,
    Init,
    Send,
    UsageError,
    encode,
)
from tests.unit.ws_cases import (
    Call,
    Case,
    Norm,
    accept,
    close,
    closes,
    complete,
    error,
    init,
    next_,
    norm,
    receive_bytes,
    recv,
    reject,
    run_steps,
    send,
    start,
    stop,
    tick,
)


def recv_bytes(data: bytes = b'{"type":"ping"}', now: float = 0.0) -> Call:
    return receive_bytes(data, now)


def subscribe(id: str, **payload: Any) -> dict[str, Any]:
    return {"type": "subscribe", "id": id, "payload": {"query": "{ hello }", **payload}}


INIT_MSG = {"type": "connection_init"}
HANDSHAKE: list[tuple[Call, list[Norm]]] = [
    (recv(INIT_MSG), [init()]),
    (accept(), [send(type="connection_ack")]),
]
RESULT = {"data": {"hello": "world"}}


CASES: dict[str, Case] = {
    # -- ConnectionInit / ConnectionAck ---------------------------------------------------------
    "init without payload, ack without payload": Case(HANDSHAKE),
    "init payload reaches Init, ack payload reaches the client": Case(
        [
            (recv({"type": "connection_init", "payload": {"token": "t"}}), [init({"token": "t"})]),
            (accept({"worker": 3}), [send(type="connection_ack", payload={"worker": 3})]),
        ]
    ),
    "init with null payload is an empty payload": Case(
        [(recv({"type": "connection_init", "payload": None}), [init({})])]
    ),
    "reject without reason closes 4403 Forbidden": Case(
        [(recv(INIT_MSG), [init()]), (reject(""), [closes(4403, "Forbidden")])]
    ),
    "reject with reason closes 4403 with it": Case(
        [(recv(INIT_MSG), [init()]), (reject("token expired"), [closes(4403, "token expired")])]
    ),
    "second init while on_connect pending closes 4429": Case(
        [
            (recv(INIT_MSG), [init()]),
            (recv(INIT_MSG), [closes(4429, "Too many initialisation requests")]),
            (accept(), []),
        ]
    ),
    "second init after ack closes 4429": Case(
        [*HANDSHAKE, (recv(INIT_MSG), [closes(4429, "Too many initialisation requests")])]
    ),
    # -- timers -------------------------------------------------------------------------------
    "no init within init_timeout_s closes 4408": Case(
        [
            (tick(2.999), []),
            (tick(3.0), [closes(4408, "Connection initialisation timeout")]),
            (tick(4.0), []),
        ]
    ),
    "custom init timeout": Case(
        [(tick(9.0), []), (tick(10.0), [closes(4408, "Connection initialisation timeout")])],
        {"init_timeout_s": 10.0},
    ),
    "init received in time stops the init timer even while on_connect is pending": Case(
        [
            (recv(INIT_MSG, now=1.0), [init()]),
            (tick(100.0), []),
            (accept(now=100.0), [send(type="connection_ack")]),
            (tick(200.0), []),
        ]
    ),
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
    "a late tick sends one ping, not a burst": Case(
        [
            *HANDSHAKE,
            (tick(45.0), [send(type="ping")]),
            (tick(54.9), []),
            (tick(55.0), [send(type="ping")]),
        ],
        {"keepalive_s": 10.0},
    ),
    "no keep-alive without keepalive_s": Case([*HANDSHAKE, (tick(10_000.0), [])]),
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
    # -- Subscribe / Next / Error / Complete -------------------------------------------------------
    "query flow: start, one next, complete": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (next_("1", RESULT), [send(type="next", id="1", payload=RESULT)]),
            (complete("1"), [send(type="complete", id="1")]),
            (next_("1", RESULT), []),
            (complete("1"), []),
            (recv({"type": "complete", "id": "1"}), []),
        ]
    ),
    "mutation payload fields pass through": Case(
        [
            *HANDSHAKE,
            (
                recv(
                    subscribe(
                        "m",
                        query="mutation M($x: Int) { add(x: $x) }",
                        variables={"x": 1},
                        operationName="M",
                        extensions={"persistedQuery": {"version": 1}},
                    )
                ),
                [
                    start(
                        "m",
                        "mutation M($x: Int) { add(x: $x) }",
                        {"x": 1},
                        "M",
                        {"persistedQuery": {"version": 1}},
                    )
                ],
            ),
        ]
    ),
    "null optional payload fields are accepted": Case(
        [
            *HANDSHAKE,
            (
                recv(subscribe("1", variables=None, operationName=None, extensions=None)),
                [start("1")],
            ),
        ]
    ),
    "subscription: many nexts, then the client completes it": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("s")), [start("s")]),
            (
                next_("s", {"data": {"n": 1}}),
                [send(type="next", id="s", payload={"data": {"n": 1}})],
            ),
            (
                next_("s", {"data": {"n": 2}}),
                [send(type="next", id="s", payload={"data": {"n": 2}})],
            ),
            (recv({"type": "complete", "id": "s"}), [stop("s")]),
            (next_("s", {"data": {"n": 3}}), []),
            (complete("s"), []),
        ]
    ),
    "error ends the operation, no complete after it": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (
                error("1", [{"message": "Cannot query field 'x'"}]),
                [send(type="error", id="1", payload=[{"message": "Cannot query field 'x'"}])],
            ),
            (complete("1"), []),
            (error("1", [{"message": "again"}]), []),
            (recv({"type": "complete", "id": "1"}), []),
        ]
    ),
    "next, error and complete for ids never started send nothing": Case(
        [
            *HANDSHAKE,
            (next_("nope", RESULT), []),
            (error("nope", [{"message": "x"}]), []),
            (complete("nope"), []),
        ]
    ),
    "client complete for an unknown id is ignored": Case(
        [*HANDSHAKE, (recv({"type": "complete", "id": "ghost"}), [])]
    ),
    "an id may be reused once its operation ended": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (complete("1"), [send(type="complete", id="1")]),
            (recv(subscribe("1")), [start("1")]),
            (recv({"type": "complete", "id": "1"}), [stop("1")]),
            (recv(subscribe("1")), [start("1")]),
        ]
    ),
    "concurrent operations are independent": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("a")), [start("a")]),
            (recv(subscribe("b")), [start("b")]),
            (next_("b", RESULT), [send(type="next", id="b", payload=RESULT)]),
            (recv({"type": "complete", "id": "a"}), [stop("a")]),
            (next_("a", RESULT), []),
            (next_("b", RESULT), [send(type="next", id="b", payload=RESULT)]),
            (complete("b"), [send(type="complete", id="b")]),
        ]
    ),
    "over max_operations: error for that id, not started, socket stays open": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (
                recv(subscribe("2")),
                [send(type="error", id="2", payload=[{"message": TOO_MANY_OPERATIONS}])],
            ),
            (next_("2", RESULT), []),
            (complete("1"), [send(type="complete", id="1")]),
            (recv(subscribe("2")), [start("2")]),
        ],
        {"max_operations": 1},
    ),
    # -- close codes ----------------------------------------------------------------------------
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
    "binary frame closes 4400": Case(
        [*HANDSHAKE, (recv_bytes(), [closes(4400, "binary frames are not supported")])]
    ),
    "text over max_message_bytes closes 1009": Case(
        [
            (
                recv({"type": "ping", "payload": {"pad": "x" * 100}}),
                [closes(1009, "message too big")],
            )
        ],
        {"max_message_bytes": 64},
    ),
    "server closes: going away": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (close(1001, "going away"), [closes(1001, "going away")]),
        ]
    ),
    "server closes: token expired": Case(
        [*HANDSHAKE, (close(4403, "token expired"), [closes(4403, "token expired")])]
    ),
    "server may close before init": Case([(close(1000, "bye"), [closes(1000, "bye")])]),
    # -- after close ----------------------------------------------------------------------------
    "everything after a close returns nothing": Case(
        [
            *HANDSHAKE,
            (recv(subscribe("1")), [start("1")]),
            (recv("not json"), [closes(4400, "Invalid message received: not valid JSON")]),
            (recv({"type": "ping"}), []),
            (recv(subscribe("2")), []),
            (recv_bytes(), []),
            (next_("1", RESULT), []),
            (error("1", [{"message": "x"}]), []),
            (complete("1"), []),
            (close(1000, "again"), []),
            (tick(1e9), []),
            (accept(), []),
            (reject("no"), []),
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


def test_every_close_code_is_covered_by_the_table() -> None:
    codes = {
        action.code
        for case in CASES.values()
        for action in run_case(case)
        if isinstance(action, Close)
    }
    assert {4400, 4401, 4403, 4408, 4409, 4429, 1009, 1000, 1001} <= codes


def test_every_server_message_type_is_produced_by_the_table() -> None:
    types = {
        json.loads(action.text)["type"]
        for case in CASES.values()
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


def test_close_actions_carry_plain_ints() -> None:
    [action] = connection().tick(3.0)
    assert isinstance(action, Close) and type(action.code) is int


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


def test_without_keepalive_no_deadline_once_acknowledged() -> None:
    conn = connection()
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    assert conn.next_deadline() is None


def test_transition_table_is_the_only_way_to_move() -> None:
    assert TRANSITIONS[ConnectionState.WAITING_INIT, ConnectionEvent.CLIENT_INIT] is (
        ConnectionState.INIT_PENDING
    )
    assert not any(state is ConnectionState.CLOSED for state, _ in TRANSITIONS)
    assert (ConnectionState.ACKNOWLEDGED, ConnectionEvent.ACCEPT) not in TRANSITIONS


# -- adapter bugs raise UsageError -----------------------------------------------------------------


def test_accept_without_pending_init_is_a_usage_error() -> None:
    conn = connection()
    with pytest.raises(UsageError, match="'accept' is not allowed in state 'waiting_init'"):
        conn.accept(None, 0.0)
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    with pytest.raises(UsageError, match="'accept' is not allowed in state 'acknowledged'"):
        conn.accept(None, 0.0)
    with pytest.raises(UsageError, match="'reject' is not allowed"):
        conn.reject("no", 0.0)


@pytest.mark.parametrize(
    "errors",
    [[], [{}], [{"message": 1}], ["boom"]],
    ids=["empty", "no-message", "message-not-str", "not-a-dict"],
)
def test_malformed_errors_are_a_usage_error(errors: list[Any]) -> None:
    conn = connection()
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    conn.receive_text(json.dumps(subscribe("1")), 0.0)
    with pytest.raises(UsageError, match="non-empty list"):
        conn.error("1", errors)
    assert conn.active_ids == frozenset({"1"})


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_unsendable_close_code_is_a_usage_error(code: int) -> None:
    conn = connection()
    with pytest.raises(UsageError, match=f"close code {code}"):
        conn.close(code, "x")
    assert not conn.closed


@pytest.mark.parametrize(
    "settings",
    [
        {"init_timeout_s": 0.0},
        {"init_timeout_s": -1.0},
        {"keepalive_s": 0.0},
        {"max_operations": 0},
        {"max_message_bytes": 0},
    ],
)
def test_out_of_range_settings_raise(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        connection(**settings)


# -- sizes, encodings and reasons ------------------------------------------------------------------


def test_message_size_limit_counts_utf8_bytes() -> None:
    prefix, suffix = '{"type":"ping","payload":{"s":"', '"}}'
    limit = 100
    count = (limit - len(prefix) - len(suffix)) // 2
    fits = prefix + "é" * count + suffix
    assert len(fits.encode()) == limit and len(fits) < limit
    conn = connection(max_message_bytes=limit)
    assert [norm(a) for a in conn.receive_text(fits, 0.0)] == [
        send(type="pong", payload={"s": "é" * count})
    ]
    too_big = fits.replace("é", "éa", 1)
    assert len(too_big.encode()) == limit + 1
    assert conn.receive_text(too_big, 0.0) == [Close(1009, "message too big")]


@pytest.mark.parametrize(
    ("char", "count", "too_big"),
    [
        ("a", 966, False),
        ("a", 967, True),
        ("€", 322, False),
        ("€", 323, True),
        ("😀", 241, False),
        ("😀", 242, True),
    ],
    ids=["1-byte-fits", "1-byte-over", "3-byte-fits", "3-byte-over", "4-byte-fits", "4-byte-over"],
)
def test_message_size_limit_with_wide_characters(char: str, count: int, too_big: bool) -> None:
    text = '{"type":"ping","payload":{"s":"' + char * count + '"}}'
    assert (len(text.encode()) > 1000) is too_big
    actions = connection(max_message_bytes=1000).receive_text(text, 0.0)
    if too_big:
        assert actions == [Close(1009, "message too big")]
    else:
        assert [norm(a) for a in actions] == [send(type="pong", payload={"s": char * count})]


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


def test_init_payload_is_a_fresh_object_per_connection() -> None:
    first = connection().receive_text(json.dumps(INIT_MSG), 0.0)
    second = connection().receive_text(json.dumps(INIT_MSG), 0.0)
    assert first == second == [Init({})]
    assert isinstance(first[0], Init) and isinstance(second[0], Init)
    assert first[0].payload is not second[0].payload


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
