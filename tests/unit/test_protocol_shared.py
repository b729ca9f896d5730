"""Rules both GraphQL-over-WebSocket machines follow, stated once and run against each.

Most of them live in the common base (``service/protocols/ws_machine.py``): initialisation
(4429 for a second ``connection_init``, 4408 when none comes in time), rejection with 4403,
keep-alive timing, 1009 for an oversized text frame, the operation lifecycle, server closes and
silence after a close. Each row is a function of :class:`~tests.unit.ws_cases.Subprotocol`, whose
builders spell what differs (``subscribe``/``start``, ``next``/``data``, the binary-frame close
code, the ``connection_error`` before a rejection, ...). Rows only one protocol has stay in
``test_protocol_transport_ws.py`` and ``test_protocol_legacy_ws.py``, which check their own rows
together with these (``whole_table``) for the close codes and message types each produces.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from service.protocols.ws_machine import ServerConnection
from service.protocols.ws_messages import TOO_MANY_OPERATIONS, Action, Close, Init, UsageError
from tests.unit.ws_cases import (
    PROTOCOLS,
    TRANSPORT,
    Call,
    Case,
    Norm,
    Subprotocol,
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
    tick,
)

INIT_MSG = {"type": "connection_init"}
RESULT = {"data": {"hello": "world"}}
ERRORS: list[dict[str, Any]] = [
    {"message": "Cannot query field 'x'", "locations": [{"line": 1, "column": 3}]},
    {"message": "second"},
]
MUTATION = "mutation M($x: Int) { add(x: $x) }"
TOO_MANY_INITS = closes(4429, "Too many initialisation requests")
INIT_TIMEOUT = closes(4408, "Connection initialisation timeout")
BINARY_REFUSED = "binary frames are not supported"


def shared_cases(p: Subprotocol) -> dict[str, Case]:
    """The shared table, spelled for subprotocol ``p``."""
    handshake: list[tuple[Call, list[Norm]]] = [(recv(INIT_MSG), [init()]), (accept(), p.ack())]
    silent_after_close: list[tuple[Call, list[Norm]]] = [
        (recv(p.op("2")), []),
        (recv(INIT_MSG), []),
        (recv({"type": "ping"}), []),
        (recv({"type": "connection_terminate"}), []),
        (recv("not json"), []),
        (recv(p.end("1")), []),
        (receive_bytes(b"\x00"), []),
        (next_("1", RESULT), []),
        (error("1", [{"message": "x"}]), []),
        (complete("1"), []),
        (close(1000, "again"), []),
        (tick(1e9), []),
        (accept(), []),
        (reject("no"), []),
    ]
    return {
        # -- connection_init / connection_ack ------------------------------------------------
        "init without payload, ack without payload": Case(handshake),
        "init payload reaches Init, ack payload reaches the client": Case(
            [
                (
                    recv({"type": "connection_init", "payload": {"authToken": "t"}}),
                    [init({"authToken": "t"})],
                ),
                (accept({"worker": 3}), p.ack({"worker": 3})),
            ]
        ),
        "init with null payload is an empty payload": Case(
            [(recv({"type": "connection_init", "payload": None}), [init()])]
        ),
        "reject with a reason closes 4403 with it": Case(
            [(recv(INIT_MSG), [init()]), (reject("token expired"), p.rejected("token expired"))]
        ),
        "reject without a reason closes 4403 Forbidden": Case(
            [(recv(INIT_MSG), [init()]), (reject(""), p.rejected(""))]
        ),
        "second init while on_connect pending closes 4429": Case(
            [(recv(INIT_MSG), [init()]), (recv(INIT_MSG), [TOO_MANY_INITS]), (accept(), [])]
        ),
        "second init after ack closes 4429": Case([*handshake, (recv(INIT_MSG), [TOO_MANY_INITS])]),
        # -- timers --------------------------------------------------------------------------
        "no init within init_timeout_s closes 4408": Case(
            [
                (tick(2.5), []),
                (tick(2.999), []),
                (tick(3.0), [INIT_TIMEOUT]),
                (tick(4.0), []),
                (tick(9.0), []),
            ]
        ),
        "custom init timeout": Case(
            [(tick(9.0), []), (tick(10.0), [INIT_TIMEOUT])], {"init_timeout_s": 10.0}
        ),
        "init in time stops the init timer, even while on_connect is pending": Case(
            [
                (recv(INIT_MSG, now=1.0), [init()]),
                (tick(100.0), []),
                (accept(now=100.0), p.ack()),
                (tick(200.0), []),
            ]
        ),
        "a late tick sends one keep-alive, not a burst": Case(
            [
                (recv(INIT_MSG), [init()]),
                (accept(), p.ack(keepalive=True)),
                (tick(45.0), [p.keepalive]),
                (tick(54.9), []),
                (tick(55.0), [p.keepalive]),
            ],
            {"keepalive_s": 10.0},
        ),
        "no keep-alive without keepalive_s": Case(
            [*handshake, (tick(10_000.0), []), (tick(1e6), [])]
        ),
        # -- operations ----------------------------------------------------------------------
        "query flow: start, one result, complete": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (next_("1", RESULT), [p.result("1", RESULT)]),
                (complete("1"), [send(type="complete", id="1")]),
                (next_("1", RESULT), []),
                (complete("1"), []),
                (recv(p.end("1")), []),
            ]
        ),
        "mutation payload fields pass through": Case(
            [
                *handshake,
                (
                    recv(
                        p.op(
                            "m",
                            query=MUTATION,
                            variables={"x": 1},
                            operationName="M",
                            extensions={"persistedQuery": {"version": 1}},
                        )
                    ),
                    [start("m", MUTATION, {"x": 1}, "M", {"persistedQuery": {"version": 1}})],
                ),
            ]
        ),
        "null optional payload fields are accepted": Case(
            [
                *handshake,
                (
                    recv(p.op("1", variables=None, operationName=None, extensions=None)),
                    [start("1")],
                ),
            ]
        ),
        "a result with resolver errors is passed as is": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (
                    next_("1", {"data": None, "errors": [{"message": "boom", "path": ["hello"]}]}),
                    [
                        p.result(
                            "1", {"data": None, "errors": [{"message": "boom", "path": ["hello"]}]}
                        )
                    ],
                ),
            ]
        ),
        "subscription: results until the client ends it": Case(
            [
                *handshake,
                (recv(p.op("s")), [start("s")]),
                (next_("s", {"data": {"n": 1}}), [p.result("s", {"data": {"n": 1}})]),
                (next_("s", {"data": {"n": 2}}), [p.result("s", {"data": {"n": 2}})]),
                (recv(p.end("s")), p.client_ended("s")),
                (next_("s", {"data": {"n": 3}}), []),
                (complete("s"), []),
            ]
        ),
        "error ends the operation, no complete after it": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (error("1", ERRORS), [p.error("1", ERRORS)]),
                (complete("1"), []),
                (next_("1", RESULT), []),
                (error("1", [{"message": "again"}]), []),
                (recv(p.end("1")), []),
            ]
        ),
        "next, error and complete for ids never started send nothing": Case(
            [
                *handshake,
                (next_("nope", RESULT), []),
                (error("nope", [{"message": "x"}]), []),
                (complete("nope"), []),
            ]
        ),
        "the client ending an unknown id is ignored": Case(
            [*handshake, (recv(p.end("ghost")), [])]
        ),
        "an id may be reused once its operation ended": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (complete("1"), [send(type="complete", id="1")]),
                (recv(p.op("1")), [start("1")]),
                (recv(p.end("1")), p.client_ended("1")),
                (recv(p.op("1")), [start("1")]),
            ]
        ),
        "concurrent operations are independent": Case(
            [
                *handshake,
                (recv(p.op("a")), [start("a")]),
                (recv(p.op("b")), [start("b")]),
                (next_("b", RESULT), [p.result("b", RESULT)]),
                (recv(p.end("a")), p.client_ended("a")),
                (next_("a", RESULT), []),
                (next_("b", RESULT), [p.result("b", RESULT)]),
                (complete("b"), [send(type="complete", id="b")]),
            ]
        ),
        "over max_operations: error for that id, not started, socket stays open": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (recv(p.op("2")), [p.error("2", [{"message": TOO_MANY_OPERATIONS}])]),
                (next_("2", RESULT), []),
                (complete("1"), [send(type="complete", id="1")]),
                (recv(p.op("2")), [start("2")]),
            ],
            {"max_operations": 1},
        ),
        # -- closes --------------------------------------------------------------------------
        "binary frame closes": Case(
            [
                *handshake,
                (receive_bytes(b'{"type":"ping"}'), [closes(p.binary_close_code, BINARY_REFUSED)]),
            ]
        ),
        "text over max_message_bytes closes 1009, before it is parsed": Case(
            [(recv(p.op("1", pad="x" * 100)), [closes(1009, "message too big")])],
            {"max_message_bytes": 64},
        ),
        "server closes: going away": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (close(1001, "going away"), [closes(1001, "going away")]),
            ]
        ),
        "server closes: token expired": Case(
            [*handshake, (close(4403, "token expired"), [closes(4403, "token expired")])]
        ),
        "server may close before init": Case([(close(1000, "bye"), [closes(1000, "bye")])]),
        # -- after a close -------------------------------------------------------------------
        "everything after a server close returns nothing": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (close(1000, "bye"), [closes(1000, "bye")]),
                *silent_after_close,
            ]
        ),
        "everything after a protocol-error close returns nothing": Case(
            [
                *handshake,
                (recv(p.op("1")), [start("1")]),
                (receive_bytes(b"\x00"), [closes(p.binary_close_code, BINARY_REFUSED)]),
                *silent_after_close,
            ]
        ),
    }


SHARED = {p.subprotocol: shared_cases(p) for p in PROTOCOLS}
NAMES = list(SHARED[TRANSPORT.subprotocol])
assert all(list(cases) == NAMES for cases in SHARED.values())


def whole_table(p: Subprotocol, own: dict[str, Case]) -> dict[str, Case]:
    """Protocol ``p``'s own rows together with the shared ones (names must not collide)."""
    shared = SHARED[p.subprotocol]
    assert not own.keys() & shared.keys(), own.keys() & shared.keys()
    return {**shared, **own}


@pytest.fixture(params=PROTOCOLS, ids=lambda p: p.subprotocol)
def protocol(request: pytest.FixtureRequest) -> Subprotocol:
    subprotocol: Subprotocol = request.param
    return subprotocol


@pytest.mark.parametrize("name", NAMES)
def test_case(protocol: Subprotocol, name: str) -> None:
    case = SHARED[protocol.subprotocol][name]
    run_steps(protocol.connection(**case.settings), case)


def acknowledged(p: Subprotocol, **settings: Any) -> ServerConnection:
    conn = p.connection(**settings)
    conn.receive_text(json.dumps(INIT_MSG), 0.0)
    conn.accept(None, 0.0)
    return conn


# -- adapter bugs raise UsageError -------------------------------------------------------------


@pytest.mark.parametrize("answer", ["accept", "reject"])
def test_answering_an_init_that_is_not_pending_is_a_usage_error(
    protocol: Subprotocol, answer: str
) -> None:
    def call(conn: ServerConnection) -> list[Action]:
        return conn.accept(None, 0.0) if answer == "accept" else conn.reject("no", 0.0)

    with pytest.raises(UsageError, match=f"'{answer}' is not allowed in state 'waiting_init'"):
        call(protocol.connection())
    with pytest.raises(UsageError, match=f"'{answer}' is not allowed in state 'acknowledged'"):
        call(acknowledged(protocol))


@pytest.mark.parametrize(
    "errors",
    [[], [{}], [{"message": 1}], ["boom"]],
    ids=["empty", "no-message", "message-not-str", "not-a-dict"],
)
def test_malformed_errors_are_a_usage_error(protocol: Subprotocol, errors: list[Any]) -> None:
    conn = acknowledged(protocol)
    conn.receive_text(json.dumps(protocol.op("1")), 0.0)
    with pytest.raises(UsageError, match="non-empty list"):
        conn.error("1", errors)
    assert conn.active_ids == frozenset({"1"})


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2999, 5000])
def test_unsendable_close_code_is_a_usage_error(protocol: Subprotocol, code: int) -> None:
    conn = protocol.connection()
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
def test_out_of_range_settings_raise(protocol: Subprotocol, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        protocol.connection(**settings)


# -- deadlines, payloads and close actions -----------------------------------------------------


def test_without_keepalive_no_deadline_once_acknowledged(protocol: Subprotocol) -> None:
    assert acknowledged(protocol).next_deadline() is None


def test_init_payload_is_a_fresh_object_per_connection(protocol: Subprotocol) -> None:
    first = protocol.connection().receive_text(json.dumps(INIT_MSG), 0.0)
    second = protocol.connection().receive_text(json.dumps(INIT_MSG), 0.0)
    assert first == second == [Init({})]
    assert isinstance(first[0], Init) and isinstance(second[0], Init)
    assert first[0].payload is not second[0].payload


def test_close_actions_carry_plain_ints(protocol: Subprotocol) -> None:
    [action] = protocol.connection().tick(3.0)
    assert isinstance(action, Close) and type(action.code) is int


# -- the message size limit counts UTF-8 bytes ---------------------------------------------------

# An init frame fits before the ack in both protocols and is answered the same way (``Init``).
SIZED_PREFIX, SIZED_SUFFIX = '{"type":"connection_init","payload":{"s":"', '"}}'
SIZED_OVERHEAD = len(SIZED_PREFIX) + len(SIZED_SUFFIX)


def sized(text: str) -> str:
    return SIZED_PREFIX + text + SIZED_SUFFIX


def test_message_size_limit_counts_utf8_bytes(protocol: Subprotocol) -> None:
    count = 30
    limit = SIZED_OVERHEAD + 2 * count
    fits = sized("é" * count)
    assert len(fits.encode()) == limit and len(fits) < limit
    conn = protocol.connection(max_message_bytes=limit)
    assert [norm(a) for a in conn.receive_text(fits, 0.0)] == [init({"s": "é" * count})]
    too_big = fits.replace("é", "éa", 1)
    assert len(too_big.encode()) == limit + 1
    assert protocol.connection(max_message_bytes=limit).receive_text(too_big, 0.0) == [
        Close(1009, "message too big")
    ]


@pytest.mark.parametrize("too_big", [False, True], ids=["fits", "over"])
@pytest.mark.parametrize("char", ["a", "€", "😀"], ids=["1-byte", "3-byte", "4-byte"])
def test_message_size_limit_with_wide_characters(
    protocol: Subprotocol, char: str, too_big: bool
) -> None:
    """Just within and just over 1000 bytes, with characters of 1, 3 and 4 bytes."""
    count = (1000 - SIZED_OVERHEAD) // len(char.encode()) + too_big
    text = sized(char * count)
    assert (len(text.encode()) > 1000) is too_big
    actions = protocol.connection(max_message_bytes=1000).receive_text(text, 0.0)
    if too_big:
        assert actions == [Close(1009, "message too big")]
    else:
        assert [norm(a) for a in actions] == [init({"s": char * count})]
