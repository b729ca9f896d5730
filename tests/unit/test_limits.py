"""Limits against hostile or careless documents, on the HTTP core and on a real server.

Each limit is shown on both sides of its boundary through ``HTTPCore`` (no sockets), then
checked once over the wire. Where other files already cover a limit they are named here rather
than repeated:

- ``tests/unit/test_http_core.py::test_operation_timeout``: ``OPERATION_TIMEOUT`` on the core;
  ``::test_overload_gives_503_with_retry_after``: 503 on the core with ``max_inflight=1``.
- ``tests/server/test_websocket.py::test_too_many_operations_per_connection`` and
  ``::test_bad_frames_get_their_close_code[oversized message]``: ``WS_MAX_SUBSCRIPTIONS`` and
  ``WS_MAX_MESSAGE_BYTES`` (1009) for graphql-transport-ws; the legacy protocol is below.
- ``tests/server/test_transport.py``: the transport's own limits (body 413, headers 431, 408).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from graphql import get_introspection_query
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import service.example.schema
from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse
from service.server.serve import Server, serve
from service.settings import Settings
from support.schemas import schema

JSON = "application/json"
GRJ = "application/graphql-response+json"
DEFAULTS = Settings()


def make_core(target: Any = schema, **overrides: Any) -> HTTPCore:
    return HTTPCore(Engine(target, Settings(**overrides)))


async def call(
    core: HTTPCore,
    body: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    query_string: str = "",
    accept: str | None = None,
) -> tuple[HTTPResponse, dict[str, Any]]:
    headers = {"content-type": JSON} if method == "POST" else {}
    if accept is not None:
        headers["accept"] = accept
    raw = orjson.dumps(body) if body is not None else b""
    result = core.handle(HTTPRequest(method, "/graphql", query_string, headers, raw, "test"))
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result, json.loads(result.body)


async def accepted(core: HTTPCore, query: str, **kw: Any) -> dict[str, Any]:
    resp, body = await call(core, {"query": query, **kw})
    assert resp.status == 200 and "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


async def rejected(core: HTTPCore, query: str, code: str, **kw: Any) -> str:
    """The request fails before execution with ``code`` (first error); return its message.

    With ``application/json`` that is a 200 without ``data``; with
    ``application/graphql-response+json`` a 400 (GraphQL over HTTP, section 6.4).
    """
    resp, body = await call(core, {"query": query, **kw})
    assert resp.status == 200 and "data" not in body, body
    assert body["errors"][0]["extensions"]["code"] == code, body
    resp, body = await call(core, {"query": query, **kw}, accept=GRJ)
    assert resp.status == 400 and "data" not in body
    assert body["errors"][0]["extensions"]["code"] == code
    message: str = body["errors"][0]["message"]
    return message


def header(resp: HTTPResponse, name: str) -> str | None:
    return next((v for k, v in resp.headers if k.lower() == name), None)


def nested(depth: int) -> str:
    """``{ item { child { ... { name } } } }`` with ``depth`` nested fields in all."""
    assert depth >= 2
    return "{ item { " + "child { " * (depth - 2) + "name" + " }" * (depth - 1) + " }"


def aliased(count: int) -> str:
    return "{ " + " ".join(f"a{i}: hello" for i in range(count)) + " }"


def fragment_bomb(levels: int) -> str:
    """Each fragment selects ``child`` twice around the previous one: a few hundred bytes that
    expand to about 3 * 2**levels fields (depth ``levels + 2``)."""
    parts = [f"query Bomb {{ item {{ ...F{levels} }} }}", "fragment F0 on Item { name }"]
    for level in range(1, levels + 1):
        inner = f"...F{level - 1}"
        parts.append(f"fragment F{level} on Item {{ child {{ {inner} }} child {{ {inner} }} }}")
    return "\n".join(parts)


# --- depth ------------------------------------------------------------------------------------


async def test_depth_limit_default_is_15() -> None:
    assert DEFAULTS.max_depth == 15
    core = make_core()
    data = await accepted(core, nested(15))
    for _ in range(13):
        data = data.get("item") or data["child"]
    assert data == {"child": {"name": "child"}}
    message = await rejected(core, nested(16), "QUERY_TOO_DEEP")
    assert message == "Query depth 16 of the operation exceeds the maximum depth 15."


async def test_depth_counts_through_fragments_and_inline_fragments() -> None:
    core = make_core(max_depth=4)
    deep_fragment = (
        "query Deep { item { ...A } } fragment A on Item { child { ... on Item { child "
        "{ child { name } } } } }"
    )
    message = await rejected(core, deep_fragment, "QUERY_TOO_DEEP")
    assert "operation 'Deep'" in message and "depth 5" in message
    await accepted(core, "query { item { ...B } } fragment B on Item { child { child { name } } }")


async def test_depth_limit_is_configurable() -> None:
    core = make_core(max_depth=2)
    await accepted(core, nested(2))
    await rejected(core, nested(3), "QUERY_TOO_DEEP")


# --- aliases ----------------------------------------------------------------------------------


async def test_alias_limit() -> None:
    assert DEFAULTS.max_aliases == 30
    core = make_core()
    data = await accepted(core, aliased(30))
    assert len(data) == 30 and data["a29"] == "Hello, world!"
    message = await rejected(core, aliased(31), "TOO_MANY_ALIASES")
    assert message == "31 aliases in the operation exceed the maximum 30."


async def test_aliases_hidden_in_fragments_count() -> None:
    core = make_core(max_aliases=3)
    query = (
        "{ ...A ...B } fragment A on Query { a: hello b: hello } "
        "fragment B on Query { c: hello d: hello }"
    )
    message = await rejected(core, query, "TOO_MANY_ALIASES")
    assert message.startswith("4 aliases")


# --- fields -----------------------------------------------------------------------------------


async def test_field_limit() -> None:
    assert DEFAULTS.max_fields == 500
    core = make_core()
    await accepted(core, "{ " + "hello " * 500 + "}")
    message = await rejected(core, "{ " + "hello " * 501 + "}", "TOO_MANY_FIELDS")
    assert message == "501 fields in the operation exceed the maximum 500."


async def test_fragment_spread_bomb_is_counted_expanded_and_refused_quickly() -> None:
    core = make_core()
    bomb = fragment_bomb(12)  # depth 14: only the field count is over its limit
    assert len(bomb) < 2000
    started = time.monotonic()
    message = await rejected(core, bomb, "TOO_MANY_FIELDS")
    # Counted without expanding (memoised per fragment): no exponential work, no validation.
    assert time.monotonic() - started < 2.0
    count = int(re.match(r"(\d+) fields in operation 'Bomb'", message).group(1))  # type: ignore[union-attr]
    assert count == 1 + 3 * 2**12 - 2
    # The same shape, small enough, is a legal query.
    data = await accepted(core, fragment_bomb(3))
    assert data["item"]["child"]["child"]["child"]["name"] == "child"


async def test_every_operation_in_the_document_is_measured() -> None:
    core = make_core(max_fields=3)
    document = "query Small { hello } query Big { hello hello hello hello }"
    # Limits apply to the document, whichever operation is picked.
    message = await rejected(core, document, "TOO_MANY_FIELDS", operationName="Small")
    assert "operation 'Big'" in message


# --- document and variables size --------------------------------------------------------------


async def test_document_size_limit() -> None:
    assert DEFAULTS.max_document_bytes == 100_000
    core = make_core()
    at_limit = "{ hello }" + " " * (100_000 - len("{ hello }"))
    assert await accepted(core, at_limit) == {"hello": "Hello, world!"}
    resp, body = await call(core, {"query": at_limit + " "})
    assert resp.status == 413
    assert body == {
        "errors": [
            {
                "message": "The document is larger than the limit of 100000 bytes.",
                "extensions": {"code": "DOCUMENT_TOO_LARGE"},
            }
        ]
    }


async def test_document_size_counts_utf8_bytes() -> None:
    core = make_core(max_document_bytes=100)
    wide = "{ hello } #" + "é" * 45  # 56 characters, 101 bytes
    assert len(wide) <= 100 < len(wide.encode())
    resp, body = await call(core, {"query": wide})
    assert resp.status == 413 and body["errors"][0]["extensions"]["code"] == "DOCUMENT_TOO_LARGE"


async def test_document_size_limit_applies_to_get() -> None:
    core = make_core(max_document_bytes=100)
    resp, body = await call(
        core, method="GET", query_string="query=" + quote("{ hello }" + " " * 100)
    )
    assert resp.status == 413 and body["errors"][0]["extensions"]["code"] == "DOCUMENT_TOO_LARGE"
    resp, body = await call(core, method="GET", query_string="query=" + quote("{ hello }"))
    assert resp.status == 200 and body == {"data": {"hello": "Hello, world!"}}


async def test_variables_size_limit() -> None:
    assert DEFAULTS.max_variables_bytes == 256_000
    core = make_core()
    query = "query($v: Int!) { echo(value: $v) }"
    overhead = len(orjson.dumps({"v": 1, "pad": ""}))
    at_limit = {"v": 1, "pad": "y" * (256_000 - overhead)}
    assert len(orjson.dumps(at_limit)) == 256_000
    assert await accepted(core, query, variables=at_limit) == {"echo": "1"}
    over = {"v": 1, "pad": "y" * (256_001 - overhead)}
    resp, body = await call(core, {"query": query, "variables": over})
    assert resp.status == 413
    assert body["errors"][0] == {
        "message": "The variables are larger than the limit of 256000 bytes.",
        "extensions": {"code": "VARIABLES_TOO_LARGE"},
    }


async def test_variables_size_limit_applies_to_get() -> None:
    core = make_core(max_variables_bytes=50)
    variables = quote(json.dumps({"v": 1, "pad": "z" * 60}))
    resp, body = await call(
        core,
        method="GET",
        query_string=f"query={quote('query($v: Int!) { echo(value: $v) }')}&variables={variables}",
    )
    assert resp.status == 413 and body["errors"][0]["extensions"]["code"] == "VARIABLES_TOO_LARGE"


# --- introspection ----------------------------------------------------------------------------


@pytest.mark.parametrize("target", [schema, service.example.schema.schema], ids=["test", "example"])
async def test_standard_introspection_query_passes_the_default_limits(target: Any) -> None:
    assert DEFAULTS.introspection is True
    core = make_core(target)
    data = await accepted(core, get_introspection_query(descriptions=True))
    names = {t["name"] for t in data["__schema"]["types"]}
    assert {"Query", "__Schema"} <= names
    # It is as deep as the default allows: one level less and it would be refused.
    await rejected(make_core(target, max_depth=14), get_introspection_query(), "QUERY_TOO_DEEP")


async def test_introspection_can_be_turned_off() -> None:
    core = make_core(introspection=False)
    for query in (
        "{ __schema { queryType { name } } }",
        '{ __type(name: "Query") { name } }',
        get_introspection_query(),
    ):
        message = await rejected(core, query, "INTROSPECTION_DISABLED")
        assert "introspection" in message.lower()
    # __typename is not introspection: clients add it everywhere.
    assert await accepted(core, "{ __typename hello }") == {
        "__typename": "Query",
        "hello": "Hello, world!",
    }


async def test_introspection_on_by_default() -> None:
    data = await accepted(make_core(), '{ __type(name: "Item") { fields { name } } }')
    assert {f["name"] for f in data["__type"]["fields"]} == {"name", "child", "blob"}


# --- over the wire ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(**overrides: Any) -> AsyncIterator[Server]:
    settings = Settings(redis_url="", **overrides)
    srv = await serve(  # type: ignore[misc]
        schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings
    )
    assert isinstance(srv, Server)
    try:
        yield srv
    finally:
        await srv.close(2.0)


async def post(
    port: int, body: dict[str, Any], timeout_s: float = 10.0
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One POST /graphql on a fresh connection; status, lower-cased headers, JSON body."""
    payload = orjson.dumps(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
        )
        raw = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, json.loads(rest)


WIRE_CASES: list[tuple[str, dict[str, Any], int, str]] = [
    ("depth", {"query": nested(5)}, 200, "QUERY_TOO_DEEP"),
    ("aliases", {"query": aliased(3)}, 200, "TOO_MANY_ALIASES"),
    ("fields", {"query": "{ " + "hello " * 101 + "}"}, 200, "TOO_MANY_FIELDS"),
    ("fragment bomb", {"query": fragment_bomb(12)}, 200, "QUERY_TOO_DEEP"),
    ("document", {"query": "{ hello }" + " " * 1000}, 413, "DOCUMENT_TOO_LARGE"),
    (
        "variables",
        {"query": "query($v: Int!) { echo(value: $v) }", "variables": {"v": 1, "p": "x" * 300}},
        413,
        "VARIABLES_TOO_LARGE",
    ),
    ("introspection", {"query": "{ __schema { types { name } } }"}, 200, "INTROSPECTION_DISABLED"),
]


async def test_limits_over_the_wire() -> None:
    async with running(
        max_depth=4,
        max_aliases=2,
        max_fields=100,
        max_document_bytes=1000,
        max_variables_bytes=200,
        introspection=False,
    ) as srv:
        port = srv.tcp_port()
        for name, body, status, code in WIRE_CASES:
            got, _, answer = await post(port, body)
            assert got == status, (name, answer)
            assert answer["errors"][0]["extensions"]["code"] == code, (name, answer)
            assert "data" not in answer, name
        # Within every limit the same server answers.
        got, _, answer = await post(port, {"query": nested(4)})
        assert got == 200 and answer["data"]["item"]["child"]["child"]["name"] == "child"


async def test_operation_timeout_over_http_and_websocket() -> None:
    async with running(operation_timeout_s=0.2) as srv:
        started = time.monotonic()
        status, _, body = await post(srv.tcp_port(), {"query": "{ slow(seconds: 5) hello }"})
        assert time.monotonic() - started < 3.0
        assert status == 200
        assert body["data"] is None
        [error] = body["errors"]
        assert error == {
            "message": "The operation timed out after 0.2 s.",
            "extensions": {"code": "OPERATION_TIMEOUT"},
        }
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            query = {"query": "{ slow(seconds: 5) }"}
            await ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": query}))
            result = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert result["type"] == "next"
            assert result["payload"]["errors"][0]["extensions"]["code"] == "OPERATION_TIMEOUT"
            done = json.loads(await asyncio.wait_for(ws.recv(), 3))
            assert done == {"id": "t", "type": "complete"}


async def test_overload_answers_503_at_once_while_in_flight_requests_finish() -> None:
    async with running(max_inflight=2) as srv:
        port = srv.tcp_port()
        engine = srv.handler.core.engine
        slow = [
            asyncio.ensure_future(post(port, {"query": "{ slow(seconds: 2) }"})) for _ in range(2)
        ]
        deadline = time.monotonic() + 5
        while engine.inflight < 2:
            assert time.monotonic() < deadline, "the slow requests never started"
            await asyncio.sleep(0.01)

        started = time.monotonic()
        status, headers, body = await post(port, {"query": "{ slow(seconds: 0.01) }"})
        assert time.monotonic() - started < 1.0  # answered at once, not queued
        assert status == 503
        assert headers["retry-after"] == "1"
        assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
        assert "limit of 2 operations" in body["errors"][0]["message"]
        assert not any(task.done() for task in slow)

        for status, _, body in await asyncio.gather(*slow):
            assert status == 200 and body == {"data": {"slow": "slept 2.0"}}
        status, _, body = await post(port, {"query": "{ hello }"})
        assert status == 200 and body == {"data": {"hello": "Hello, world!"}}


# --- WebSocket limits on the legacy protocol --------------------------------------------------


async def legacy_init(ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"


async def next_non_ka(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if message["type"] != "ka":
            return message


async def test_legacy_websocket_limits() -> None:
    async with running(ws_max_subscriptions=2, ws_max_message_bytes=2048) as srv:
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-ws"]) as ws:  # type: ignore[list-item]
            await legacy_init(ws)
            for op_id in ("1", "2", "3"):
                query = {"query": "subscription { ticker { value } }"}
                await ws.send(json.dumps({"id": op_id, "type": "start", "payload": query}))
            message = await next_non_ka(ws)
            assert message == {
                "type": "error",
                "id": "3",
                "payload": {"message": "too many operations on this connection"},
            }
            # Stopping one makes room again.
            await ws.send(json.dumps({"id": "1", "type": "stop"}))
            assert await next_non_ka(ws) == {"id": "1", "type": "complete"}
            await ws.send(
                json.dumps({"id": "4", "type": "start", "payload": {"query": "{ hello }"}})
            )
            assert (await next_non_ka(ws))["payload"] == {"data": {"hello": "Hello, world!"}}

            await ws.send(
                json.dumps({"id": "5", "type": "start", "payload": {"query": "x" * 3000}})
            )
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1009
