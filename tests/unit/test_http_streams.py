"""Streamed answers from the HTTP core: Accept negotiation, graphql-sse and multipart framing,
queries, subscriptions, request errors and heartbeats, no sockets."""

from __future__ import annotations

import asyncio
import inspect
import json
from typing import Any

import graphene
import pytest

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse, HTTPStream
from service.engine.recorder import NullRecorder
from service.protocols.streams import MULTIPART, SSE, MultipartFraming, SSEFraming, stream_kind
from service.settings import Settings
from support.schemas import schema

APOLLO_SUBSCRIPTION_ACCEPT = (
    "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,"
    "application/graphql-response+json,application/json;q=0.9"
)


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("text/event-stream", SSE),
        ("text/event-stream; charset=utf-8", SSE),
        ('multipart/mixed;subscriptionSpec="1.0", application/json', MULTIPART),
        (APOLLO_SUBSCRIPTION_ACCEPT, MULTIPART),
        ("multipart/mixed;deferSpec=20220824, application/json", None),  # not subscriptions
        ("text/event-stream;q=0, application/json", None),
        ("application/json", None),
        ("*/*", None),
        (None, None),
    ],
)
def test_stream_kind_from_accept(accept: str | None, kind: str | None) -> None:
    assert stream_kind(accept) == kind


def test_framings() -> None:
    sse = SSEFraming()
    assert sse.next(b'{"data":1}') == b'event: next\ndata: {"data":1}\n\n'
    assert sse.end() == b"event: complete\ndata: \n\n"
    assert sse.heartbeat() == b":\n\n"
    multipart = MultipartFraming()
    body = (
        multipart.start()
        + multipart.next(b'{"data":1}')
        + multipart.heartbeat()
        + multipart.fatal(b'[{"message":"m"}]')
        + multipart.end()
    )
    assert body == (
        b"\r\n--graphql\r\ncontent-type: application/json\r\n\r\n"
        b'{"payload":{"data":1}}\r\n--graphql'
        b"\r\ncontent-type: application/json\r\n\r\n{}\r\n--graphql"
        b'\r\ncontent-type: application/json\r\n\r\n{"payload":null,"errors":[{"message":"m"}]}'
        b"\r\n--graphql--\r\n"
    )
    assert dict(multipart.headers)["content-type"] == (
        'multipart/mixed;boundary="graphql";subscriptionSpec="1.0"'
    )


class Counts(NullRecorder):
    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []

    def request(self, transport: str, operation_type: str, status: str) -> None:
        self.requests.append((transport, operation_type, status))


def make_core(target: Any = schema, **overrides: Any) -> HTTPCore:
    recorder = Counts()
    engine = Engine(target, Settings(**overrides), recorder=recorder)
    return HTTPCore(engine, streams=True)


async def answer(core: HTTPCore, body: dict[str, Any], accept: str) -> HTTPResponse:
    request = HTTPRequest(
        "POST",
        "/graphql",
        "",
        {"content-type": "application/json", "accept": accept},
        json.dumps(body).encode(),
    )
    result = core.handle(request)
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result


async def read_all(stream: HTTPStream) -> bytes:
    assert stream.chunks is not None
    out = b""
    async for chunk in stream.chunks:
        out += chunk
    return out


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        data = fields.get("data", "")
        events.append((fields["event"], json.loads(data) if data else None))
    return events


async def test_sse_query_is_one_next_then_complete() -> None:
    core = make_core()
    stream = await answer(core, {"query": "{ hello }"}, "text/event-stream")
    assert isinstance(stream, HTTPStream)
    assert (stream.status, dict(stream.headers)["x-accel-buffering"]) == (200, "no")
    events = sse_events(await read_all(stream))
    assert events == [("next", {"data": {"hello": "Hello, world!"}}), ("complete", None)]
    assert core.recorder.requests == [("sse", "query", "ok")]  # type: ignore[attr-defined]


async def test_sse_subscription_streams_every_event() -> None:
    core = make_core()
    stream = await answer(core, {"query": "subscription { count(upto: 3) }"}, "text/event-stream")
    assert isinstance(stream, HTTPStream)
    events = sse_events(await read_all(stream))
    assert events == [
        ("next", {"data": {"count": 0}}),
        ("next", {"data": {"count": 1}}),
        ("next", {"data": {"count": 2}}),
        ("complete", None),
    ]
    assert core.recorder.requests == [("sse", "subscription", "complete")]  # type: ignore[attr-defined]


async def test_sse_request_errors_are_next_events_in_an_accepted_stream() -> None:
    core = make_core()
    stream = await answer(core, {"query": "{ nope }"}, "text/event-stream")
    assert isinstance(stream, HTTPStream)
    (event, data), complete = sse_events(await read_all(stream))
    assert event == "next" and "data" not in data
    assert data["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert complete == ("complete", None)


async def test_multipart_subscription_parts_and_final_boundary() -> None:
    core = make_core()
    stream = await answer(
        core, {"query": "subscription { count(upto: 2) }"}, APOLLO_SUBSCRIPTION_ACCEPT
    )
    assert isinstance(stream, HTTPStream)
    raw = await read_all(stream)
    assert raw.startswith(b"\r\n--graphql\r\n") and raw.endswith(b"\r\n--graphql--\r\n")
    parts = [
        json.loads(part.split(b"\r\n\r\n", 1)[1])
        for part in raw.split(b"\r\n--graphql")[1:-1]
        if part
    ]
    assert parts == [{"payload": {"data": {"count": 0}}}, {"payload": {"data": {"count": 1}}}]
    assert core.recorder.requests == [("multipart", "subscription", "complete")]  # type: ignore[attr-defined]


async def test_multipart_queries_and_request_errors_are_plain_json() -> None:
    core = make_core()
    response = await answer(core, {"query": "{ hello }"}, APOLLO_SUBSCRIPTION_ACCEPT)
    assert not isinstance(response, HTTPStream)
    assert json.loads(response.body) == {"data": {"hello": "Hello, world!"}}
    response = await answer(core, {"query": "subscription { nope }"}, APOLLO_SUBSCRIPTION_ACCEPT)
    assert not isinstance(response, HTTPStream)
    assert response.status == 400  # graphql-response+json is the first JSON type accepted


async def test_without_streams_subscriptions_over_http_are_refused() -> None:
    core = HTTPCore(Engine(schema, Settings()))
    response = await answer(core, {"query": "subscription { count }"}, "text/event-stream")
    assert response.status == 406  # the Accept header allows no JSON type


class Quiet(graphene.ObjectType):
    """A subscription that waits forever after its first event."""

    tick = graphene.Int()

    async def subscribe_tick(root: Any, info: Any) -> Any:
        yield 1
        await asyncio.Event().wait()

    def resolve_tick(root: Any, info: Any) -> Any:
        return root


quiet_schema = graphene.Schema(query=Quiet, subscription=Quiet)


async def test_heartbeats_while_idle_and_closing_ends_the_source() -> None:
    core = make_core(quiet_schema, http_stream_heartbeat_s=0.01)
    stream = await answer(core, {"query": "subscription { tick }"}, APOLLO_SUBSCRIPTION_ACCEPT)
    assert isinstance(stream, HTTPStream) and stream.chunks is not None
    chunks = aiter(stream.chunks)
    assert await anext(chunks) == MultipartFraming().start()
    assert b'"payload":{"data":{"tick":1}}' in await anext(chunks)
    for _ in range(2):  # the source is idle: heartbeats
        assert await asyncio.wait_for(anext(chunks), 5) == MultipartFraming().heartbeat()
    await stream.chunks.aclose()  # type: ignore[attr-defined]  # the client left
    assert core.recorder.requests == [("multipart", "subscription", "cancelled")]  # type: ignore[attr-defined]
