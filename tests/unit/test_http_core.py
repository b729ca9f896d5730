"""Table tests of the GraphQL-over-HTTP core: every status code, no sockets."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any
from urllib.parse import quote

import pytest

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.protocols.codes import ErrorCode
from service.protocols.http import HTTPError
from service.settings import Settings
from support.schemas import schema

GRJ = "application/graphql-response+json"
JSON = "application/json"

IDS = RequestIds()


def make_core(**overrides: Any) -> HTTPCore:
    settings = Settings(**overrides)
    return HTTPCore(Engine(schema, settings))


async def call(
    core: HTTPCore,
    method: str = "POST",
    path: str = "/graphql",
    body: bytes | dict[str, Any] = b"",
    headers: dict[str, str] | None = None,
    query_string: str = "",
) -> tuple[HTTPResponse, dict[str, Any]]:
    hdrs = {"content-type": JSON}
    if headers is not None:
        hdrs = {k.lower(): v for k, v in headers.items()}
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    request_id = IDS.for_headers(hdrs)  # the transport's job
    result = core.handle(HTTPRequest(method, path, query_string, hdrs, raw, "test", request_id))
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result, json.loads(result.body)


def header(resp: HTTPResponse, name: str) -> str | None:
    for key, value in resp.headers:
        if key.lower() == name:
            return value
    return None


CASES: list[tuple[str, dict[str, Any], int, str | None]] = [
    # (id, call kwargs, expected status, substring of the first error message)
    ("post json", {"body": {"query": "{ hello }"}}, 200, None),
    (
        "post graphql body",
        {"body": b"{ hello }", "headers": {"Content-Type": "application/graphql"}},
        200,
        None,
    ),
    (
        "get query",
        {"method": "GET", "query_string": "query=" + quote("{ hello }"), "headers": {}},
        200,
        None,
    ),
    ("unknown path", {"path": "/nope", "body": {"query": "{ hello }"}}, 404, "Not found"),
    ("wrong method", {"method": "PUT", "body": {"query": "{ hello }"}}, 405, "Method PUT"),
    ("malformed json", {"body": b"{nope"}, 400, "not valid JSON"),
    ("empty body", {"body": b""}, 400, "empty"),
    ("json array", {"body": b"[]"}, 400, "Batched"),
    ("json scalar", {"body": b"3"}, 400, "JSON object"),
    ("query missing", {"body": {"variables": {}}}, 400, "'query' parameter is missing"),
    ("query not string", {"body": {"query": 3}}, 400, "'query' parameter must be a string"),
    (
        "variables not object",
        {"body": {"query": "{ hello }", "variables": [1]}},
        400,
        "'variables'",
    ),
    (
        "operationName not string",
        {"body": {"query": "{ hello }", "operationName": 1}},
        400,
        "operationName",
    ),
    (
        "extensions not object",
        {"body": {"query": "{ hello }", "extensions": "x"}},
        400,
        "extensions",
    ),
    (
        "unsupported content type",
        {"body": b"query=x", "headers": {"Content-Type": "text/plain"}},
        415,
        "Unsupported Content-Type",
    ),
    ("missing content type", {"body": b"{}", "headers": {}}, 415, "Unsupported Content-Type"),
    (
        "unacceptable",
        {"body": {"query": "{ hello }"}, "headers": {"Content-Type": JSON, "Accept": "text/html"}},
        406,
        "Not acceptable",
    ),
    (
        "get bad variables",
        {"method": "GET", "query_string": "query=%7Bhello%7D&variables=%7Bx", "headers": {}},
        400,
        "'variables' parameter is not valid JSON",
    ),
    ("get without query", {"method": "GET", "query_string": "", "headers": {}}, 400, "missing"),
    (
        "mutation over get",
        {"method": "GET", "query_string": "query=" + quote("mutation { bump }"), "headers": {}},
        405,
        "Mutations are not allowed over GET",
    ),
    ("subscription over http", {"body": {"query": "subscription { count }"}}, 400, "WebSocket"),
    ("parse error json", {"body": {"query": "{ hello "}}, 200, "Syntax Error"),
    (
        "parse error grj",
        {"body": {"query": "{ hello "}, "headers": {"Content-Type": JSON, "Accept": GRJ}},
        400,
        "Syntax Error",
    ),
    ("validation error json", {"body": {"query": "{ nope }"}}, 200, "Cannot query field 'nope'"),
    (
        "validation error grj",
        {"body": {"query": "{ nope }"}, "headers": {"Content-Type": JSON, "Accept": GRJ}},
        400,
        "Cannot query field 'nope'",
    ),
    (
        "variable coercion grj",
        {
            "body": {"query": "query($v: Int!) { echo(value: $v) }", "variables": {"v": "x"}},
            "headers": {"Content-Type": JSON, "Accept": GRJ},
        },
        400,
        "$v",
    ),
    (
        "unknown operation",
        {"body": {"query": "query A { hello }", "operationName": "B"}},
        200,
        "Unknown operation named 'B'",
    ),
    (
        "ambiguous operation",
        {"body": {"query": "query A { hello } query B { hello }"}},
        200,
        "Must provide operation name",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_status_table(kwargs: dict[str, Any], status: int, message: str | None) -> None:
    resp, body = await call(make_core(), **kwargs)
    assert resp.status == status, body
    if message is None:
        assert "errors" not in body
        assert body["data"]
    else:
        assert message in body["errors"][0]["message"]


async def test_request_errors_have_no_data_key_in_graphql_response_json() -> None:
    resp, body = await call(
        make_core(), body={"query": "{ nope }"}, headers={"Content-Type": JSON, "Accept": GRJ}
    )
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert header(resp, "content-type") == GRJ + "; charset=utf-8"


async def test_error_codes() -> None:
    core = make_core()
    _, parse = await call(core, body={"query": "{"})
    assert parse["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    _, coercion = await call(
        core, body={"query": "query($v: Int!) { echo(value: $v) }", "variables": {}}
    )
    assert coercion["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "data" not in coercion


def test_accept_negotiation() -> None:
    from service.protocols.http import negotiate

    assert negotiate(None) == JSON
    assert negotiate("") == JSON
    assert negotiate("*/*") == JSON
    assert negotiate(GRJ) == GRJ
    assert negotiate(f"{GRJ}, {JSON};q=0.9") == GRJ
    assert negotiate(f"{JSON}, {GRJ}") == GRJ
    assert negotiate(f"{GRJ};q=0.5, {JSON}") == JSON
    with pytest.raises(HTTPError) as info:
        negotiate("text/html, application/xml")
    assert info.value.status == 406
    with pytest.raises(HTTPError):
        negotiate(f"{GRJ};q=0")


async def test_allow_headers() -> None:
    resp, _ = await call(make_core(), method="DELETE", body={"query": "{ hello }"})
    assert header(resp, "allow") == "GET, POST"
    resp, _ = await call(
        make_core(), method="GET", query_string="query=mutation%7Bbump%7D", headers={}
    )
    assert header(resp, "allow") == "POST"


async def test_resolver_exception_is_masked_and_handler_called() -> None:
    seen: list[BaseException] = []

    def handler(exc: BaseException, context: Any) -> None:
        seen.append(exc)

    core = HTTPCore(Engine(schema, Settings(), exception_handler=handler))
    resp, body = await call(
        core,
        body={"query": "{ boom hello }"},
        headers={"Content-Type": JSON, "X-Request-ID": "req-42"},
    )
    assert resp.status == 200
    assert body["data"] == {"boom": None, "hello": "Hello, world!"}
    error = body["errors"][0]
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "requestId": "req-42"}
    assert "secret" not in resp.body.decode() and "Traceback" not in resp.body.decode()
    assert error["path"] == ["boom"]
    assert [type(e) for e in seen] == [RuntimeError]


async def test_graphql_error_from_resolver_is_shown() -> None:
    _, body = await call(make_core(), body={"query": "{ refused }"})
    assert body["errors"][0]["message"] == "you may not"
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_body_and_document_and_variable_limits() -> None:
    core = make_core(max_document_bytes=50, max_variables_bytes=20)
    resp, body = await call(core, body={"query": "{ hello }" + " " * 60})
    assert resp.status == 413 and body["errors"][0]["extensions"]["code"] == "DOCUMENT_TOO_LARGE"
    resp, body = await call(
        core,
        body={
            "query": "query($v: Int!) { echo(value: $v) }",
            "variables": {"v": 1, "pad": "y" * 40},
        },
    )
    assert resp.status == 413 and body["errors"][0]["extensions"]["code"] == "VARIABLES_TOO_LARGE"


async def test_document_cache_hits_and_caches_failures() -> None:
    core = make_core(document_cache_size=2)
    cache = core.engine.cache
    first = cache.get("{ hello }")
    assert cache.get("{ hello }") is first
    bad = cache.get("{ nope }")
    assert bad.errors and cache.get("{ nope }") is bad
    cache.get("{ item { name } }")
    assert len(cache) == 2
    assert cache.get("{ hello }") is not first  # evicted, re-prepared


async def test_context_getter_sync_async_and_receives_request() -> None:
    seen: list[HTTPRequest] = []

    async def get_context(request: HTTPRequest) -> dict[str, Any]:
        seen.append(request)
        await asyncio.sleep(0)
        return {"user": "alice", "request_id": request.request_id}

    core = HTTPCore(Engine(schema, Settings()), get_context=get_context)
    _, body = await call(
        core,
        body={"query": "{ whoami }"},
        headers={"Content-Type": JSON, "X-Forwarded-For": "1.2.3.4"},
    )
    assert body == {"data": {"whoami": "alice"}}
    assert seen[0].remote == "test" and seen[0].headers["x-forwarded-for"] == "1.2.3.4"

    core = HTTPCore(Engine(schema, Settings()), get_context=lambda r: {"user": "bob"})
    _, body = await call(core, body={"query": "{ whoami }"})
    assert body == {"data": {"whoami": "bob"}}


async def test_context_getter_http_error_and_crash() -> None:
    def unauthorized(request: HTTPRequest) -> None:
        raise HTTPError(
            401,
            "token expired",
            headers=(("www-authenticate", 'Bearer error="invalid_token"'),),
            code=ErrorCode.UNAUTHENTICATED,
        )

    resp, body = await call(
        HTTPCore(Engine(schema, Settings()), get_context=unauthorized), body={"query": "{ hello }"}
    )
    assert resp.status == 401 and header(resp, "www-authenticate") == 'Bearer error="invalid_token"'
    assert body["errors"][0]["message"] == "token expired"

    def crash(request: HTTPRequest) -> None:
        raise KeyError("hidden")

    resp, body = await call(
        HTTPCore(Engine(schema, Settings()), get_context=crash), body={"query": "{ hello }"}
    )
    assert resp.status == 500 and "hidden" not in resp.body.decode()
    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


async def test_overload_gives_503_with_retry_after() -> None:
    core = make_core(max_inflight=1)
    first = core.handle(
        HTTPRequest(
            "POST", "/graphql", "", {"content-type": JSON}, b'{"query":"{ slow(seconds: 0.2) }"}'
        )
    )
    assert inspect.isawaitable(first)
    task = asyncio.ensure_future(first)
    await asyncio.sleep(0)  # let the first operation start
    resp, body = await call(core, body={"query": "{ slow(seconds: 0.01) }"})
    assert resp.status == 503 and header(resp, "retry-after") == "1"
    assert "limit of 1" in body["errors"][0]["message"]
    done = await task
    assert done.status == 200
    resp, _ = await call(core, body={"query": "{ hello }"})
    assert resp.status == 200


async def test_operation_timeout() -> None:
    core = make_core(operation_timeout_s=0.05)
    resp, body = await call(core, body={"query": "{ slow(seconds: 5) }"})
    assert resp.status == 200
    assert body["errors"][0]["extensions"]["code"] == "OPERATION_TIMEOUT"


async def test_sync_fast_path_returns_response_without_awaiting() -> None:
    core = make_core()
    result = core.handle(
        HTTPRequest("POST", "/graphql", "", {"content-type": JSON}, b'{"query":"{ hello }"}')
    )
    assert isinstance(result, HTTPResponse)
