"""Limits against hostile or careless documents, on the HTTP core (no sockets).

Each limit is shown on both sides of its boundary through ``HTTPCore``; each is checked once
over the wire, with the operation timeout, overload and the legacy WebSocket limits, in
``tests/server/test_limits_wire.py``. Where other files already cover a limit they are named
here rather than repeated:

- ``tests/unit/test_http_core.py::test_operation_timeout``: ``OPERATION_TIMEOUT`` on the core;
  ``::test_overload_gives_503_with_retry_after``: 503 on the core with ``max_inflight=1``.
- ``tests/server/test_websocket.py::test_too_many_operations_per_connection`` and
  ``::test_bad_frames_get_their_close_code[oversized message]``: ``WS_MAX_SUBSCRIPTIONS`` and
  ``WS_MAX_MESSAGE_BYTES`` (1009) for graphql-transport-ws; graphql-ws's are in the wire file.
- ``tests/server/test_transport.py``: the transport's own limits (body 413, headers 431, 408).
"""

from __future__ import annotations

import inspect
import json
import re
import time
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from graphql import get_introspection_query

import service.example.schema
from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse
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


def many_fields(n: int) -> str:
    """An operation of exactly ``n`` fields, at most 60 answering to one name per selection set
    (over 64 is refused on its own, by ``max_same_name_fields``): ``item { name x60 child {
    name x60 child { ... } } }``."""
    assert n >= 2
    remaining = n - 1  # the top-level ``item``
    levels: list[int] = []
    while remaining > 0:
        names = min(60, remaining)
        remaining -= names
        child = 1 if remaining > 0 else 0
        remaining -= child
        levels.append(names)
    text = ""
    for names in reversed(levels):
        inner = f" child {{ {text} }}" if text else ""
        text = "name " * names + inner
    return f"{{ item {{ {text} }} }}"


async def test_field_limit() -> None:
    assert DEFAULTS.max_fields == 500
    core = make_core()
    await accepted(core, many_fields(500))
    message = await rejected(core, many_fields(501), "TOO_MANY_FIELDS")
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
