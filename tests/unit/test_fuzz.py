"""Hostile and random input: nothing a client sends may crash a worker or get a 500.

- The HTTP core: arbitrary methods, paths, headers, query strings and bodies (bytes, any JSON,
  and GraphQL-shaped JSON built from schema words) always give an ``HTTPResponse`` with a
  client-error or success status and a GraphQL-shaped JSON body.
- Both WebSocket state machines: arbitrary text, bytes and protocol-shaped messages, with the
  application's answers (accept, reject, results) and the clock mixed in, only ever produce
  lists of actions, and every ``Close`` carries a code a client can provoke.

A live server gets the same treatment over sockets in ``tests/server/test_fuzz_wire.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse
from service.protocols.negotiate import make_connection
from service.protocols.ws_machine import ConnectionState, ServerConnection
from service.protocols.ws_messages import (
    LEGACY_WS_SUBPROTOCOL,
    TRANSPORT_WS_SUBPROTOCOL,
    Close,
    Init,
    Send,
    Start,
    Stop,
)
from service.server.application import make_context_getter
from service.settings import Settings
from support.schemas import schema

HTTP_STATUSES = {200, 400, 404, 405, 406, 413, 415}
CLOSE_CODES = {1000, 1003, 1009, 4400, 4401, 4403, 4406, 4408, 4409, 4429, 4500}
FUZZ = hsettings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# Words of the test schema and of GraphQL, so random documents often parse and sometimes
# validate. ``slow`` and ``tick`` are left out: they sleep or broadcast.
WORDS = [
    "{", "}", "(", ")", "[", "]", ":", "!", "=", "$v", "$w", "...", "@skip(if: true)",
    "@include(if: $v)", "query", "mutation", "subscription", "fragment", "on", "Item", "Query",
    "Int", "Int!", "String", "hello", "item", "child", "name", "blob", "echo", "value", "bump",
    "by", "whoami", "must", "refused", "boom", "count", "upto", "ticker", "__typename",
    "__schema", "types", "__type", "a:", "b:", '"x"', "1", "-1", "2147483648", "1.5", "null",
    "true", "#", "\n", '"""', "\\u0000",
]  # fmt: skip
documents = (
    st.lists(st.sampled_from(WORDS), max_size=24).map(" ".join)
    | st.sampled_from(
        [
            "{ hello }",
            "{ boom hello }",
            "{ must }",
            "{ refused }",
            "query($v: Int!) { echo(value: $v) }",
            "query Q { hello } query R { item { name } }",
            "mutation { bump(by: 2) }",
            "subscription { count }",
            "{ __schema { types { name } } }",
            "{ item { ...F } } fragment F on Item { child { ...F } }",
        ]
    )
    | st.text(max_size=60)
)
graphql_bodies = st.fixed_dictionaries(
    {},
    optional={
        "query": documents | json_values,
        "variables": st.dictionaries(st.sampled_from(["v", "w", "x"]), json_values) | json_values,
        "operationName": st.sampled_from(["Q", "R", ""]) | json_values,
        "extensions": json_values
        | st.just({"persistedQuery": {"version": 1, "sha256Hash": "abc"}}),
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(orjson.dumps)
    | graphql_bodies.map(orjson.dumps)
    | documents.map(str.encode)
)
query_strings = st.text(max_size=80) | graphql_bodies.map(
    lambda body: urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40
)  # what httptools hands over: latin-1 text
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(
            [
                "application/json",
                "application/json; charset=utf-8",
                "application/graphql",
                "application/graphql-response+json",
                "text/plain",
                "",
            ]
        )
        | header_values,
        "accept": st.sampled_from(
            [
                "application/graphql-response+json",
                "application/json;q=0.5, */*;q=0.1",
                "text/html",
                "application/json;q=nan",
                "application/json;q=0",
            ]
        )
        | header_values,
        "authorization": st.sampled_from(["Bearer x", "Basic y", "Bearer a.b.c"]) | header_values,
        "x-request-id": header_values,
    },
)
requests = st.builds(
    HTTPRequest,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
    | st.text(max_size=8),
    path=st.sampled_from(["/graphql", "/", "/graphql/", "/GRAPHQL", "/healthz"])
    | st.text(max_size=20),
    query_string=query_strings,
    headers=headers,
    body=bodies,
    remote=st.just("fuzz"),
)


@contextlib.contextmanager
def event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def answer(
    core: HTTPCore, loop: asyncio.AbstractEventLoop, request: HTTPRequest
) -> tuple[HTTPResponse, Any]:
    result = core.handle(request)
    if inspect.isawaitable(result):
        result = loop.run_until_complete(result)
    assert isinstance(result, HTTPResponse), result
    body = json.loads(result.body)
    assert isinstance(body, dict) and ("data" in body or "errors" in body), body
    if result.status != 200:
        assert "data" not in body and body["errors"][0]["message"]
    if "errors" in body:
        assert all(isinstance(e["message"], str) for e in body["errors"])
        assert body["errors"][0]["extensions"]["code"] != "INTERNAL_SERVER_ERROR" or (
            "boom" in request.body.decode("utf-8", "replace") + request.query_string
        )
    return result, body


# --- the HTTP core ----------------------------------------------------------------------------


def test_http_core_answers_every_request() -> None:
    core = HTTPCore(Engine(schema, Settings(operation_timeout_s=1.0, max_document_bytes=2000)))
    with event_loop() as loop:

        @FUZZ
        @given(request=requests)
        def check(request: HTTPRequest) -> None:
            response, _ = answer(core, loop, request)
            assert response.status in HTTP_STATUSES, (response.status, response.body)

        check()


def test_http_core_with_authentication_answers_every_request() -> None:
    """With JWT auth on, a bad Authorization header adds 401 and nothing else."""
    settings = Settings(jwt_secret="f" * 40, operation_timeout_s=1.0)
    core = HTTPCore(Engine(schema, settings), get_context=make_context_getter(settings))
    with event_loop() as loop:

        @FUZZ
        @given(request=requests)
        def check(request: HTTPRequest) -> None:
            response, body = answer(core, loop, request)
            assert response.status in HTTP_STATUSES | {401}, (response.status, response.body)
            if response.status == 401:
                assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
                challenge = dict(response.headers)["www-authenticate"]
                assert challenge.startswith('Bearer error="invalid_token"')
                challenge.encode("latin-1")  # a header value the transport can write

        check()


@FUZZ
@given(body=st.binary(max_size=500))
def test_arbitrary_bytes_as_graphql_body(body: bytes) -> None:
    core = HTTPCore(Engine(schema, Settings()))
    request = HTTPRequest("POST", "/graphql", "", {"content-type": "application/graphql"}, body)
    with event_loop() as loop:
        response, _ = answer(core, loop, request)
    assert response.status in {200, 400}


# --- the WebSocket state machines -------------------------------------------------------------

message_types = st.sampled_from(
    [
        "connection_init",
        "connection_ack",
        "ping",
        "pong",
        "subscribe",
        "next",
        "error",
        "complete",
        "start",
        "stop",
        "data",
        "ka",
        "connection_terminate",
    ]
) | st.text(max_size=10)
operation_ids = st.sampled_from(["1", "2", "3"]) | st.text(max_size=4) | st.integers() | st.none()
operation_payloads = st.fixed_dictionaries(
    {"query": st.sampled_from(["{ hello }", "subscription { count }"]) | json_values},
    optional={
        "variables": json_values,
        "operationName": json_values,
        "extensions": json_values,
    },
)
client_messages = st.fixed_dictionaries(
    {},
    optional={
        "type": message_types | json_values,
        "id": operation_ids,
        "payload": operation_payloads | json_values,
    },
).map(json.dumps)

# Steps: what the client sends, what the application answers, and the clock moving.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("text"), client_messages),
        st.tuples(st.just("text"), client_messages),  # twice as likely as the rest
        st.tuples(st.just("text"), st.text(max_size=40)),
        st.tuples(st.just("bytes"), st.binary(max_size=40)),
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=5)),
        st.tuples(st.just("accept"), st.none() | st.just({"hello": "you"})),
        st.tuples(st.just("reject"), st.text(max_size=200)),
        st.tuples(st.just("next"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("complete"), st.integers(min_value=0, max_value=3)),
        st.tuples(st.just("error"), st.integers(min_value=0, max_value=3)),
    ),
    max_size=30,
)


def check_actions(machine: ServerConnection, actions: Any) -> None:
    assert isinstance(actions, list)
    for index, action in enumerate(actions):
        assert isinstance(action, Send | Close | Init | Start | Stop), action
        if isinstance(action, Send):
            assert isinstance(json.loads(action.text), dict)
        elif isinstance(action, Close):
            assert action.code in CLOSE_CODES, action
            assert len(action.reason.encode("utf-8")) <= 123
            assert index == len(actions) - 1, "a Close must be the last action"
            assert machine.closed
        elif isinstance(action, Start):
            assert action.id in machine.active_ids
            assert isinstance(action.payload["query"], str)


def run_steps(subprotocol: str, script: list[tuple[str, Any]]) -> None:
    now = 100.0
    machine = make_connection(
        subprotocol,
        now=now,
        init_timeout_s=3.0,
        keepalive_s=2.0,
        max_operations=2,
        max_message_bytes=300,
    )
    for kind, arg in script:
        was_closed = machine.closed
        actions: Any
        if kind == "text":
            actions = machine.receive_text(arg, now)
        elif kind == "bytes":
            actions = machine.receive_bytes(arg, now)
        elif kind == "tick":
            now += arg
            actions = machine.tick(now)
        elif kind in {"accept", "reject"}:
            if machine.state is not ConnectionState.INIT_PENDING:
                continue  # the adapter only answers a pending Init
            answer_init = machine.accept if kind == "accept" else machine.reject
            actions = answer_init(arg, now)
        else:
            active = sorted(machine.active_ids)
            op_id = active[arg % len(active)] if active else str(arg)
            if kind == "next":
                actions = machine.next(op_id, {"data": {"hello": "Hello, world!"}})
            elif kind == "complete":
                actions = machine.complete(op_id)
            else:
                actions = machine.error(op_id, [{"message": "nope"}])
        check_actions(machine, actions)
        if was_closed:
            assert actions == []
        deadline = machine.next_deadline()
        assert deadline is None or isinstance(deadline, float)


@pytest.mark.parametrize("subprotocol", [TRANSPORT_WS_SUBPROTOCOL, LEGACY_WS_SUBPROTOCOL])
def test_websocket_machines_only_return_actions(subprotocol: str) -> None:
    @FUZZ
    @given(script=steps)
    def check(script: list[tuple[str, Any]]) -> None:
        run_steps(subprotocol, script)

    check()


@pytest.mark.parametrize("subprotocol", [TRANSPORT_WS_SUBPROTOCOL, LEGACY_WS_SUBPROTOCOL])
def test_websocket_machines_take_any_single_frame(subprotocol: str) -> None:
    """Any one frame, before and after the ack."""

    @FUZZ
    @given(frame=st.text() | st.binary() | client_messages, acknowledged=st.booleans())
    def check(frame: str | bytes, acknowledged: bool) -> None:
        machine = make_connection(subprotocol, now=0.0, max_message_bytes=1000)
        if acknowledged:
            check_actions(machine, machine.receive_text('{"type":"connection_init"}', 0.0))
            check_actions(machine, machine.accept(None, 0.0))
        if isinstance(frame, bytes):
            check_actions(machine, machine.receive_bytes(frame, 1.0))
        else:
            check_actions(machine, machine.receive_text(frame, 1.0))

    check()
