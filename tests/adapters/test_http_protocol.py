"""The native HTTP/1.1 protocol against a fake transport and a fake clock: pipelining, timeouts
and flow control without a socket and without waiting for real time."""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

from service.engine.http import HTTPRequest, HTTPResponse, RequestIds
from service.server.native import MAX_PIPELINE, DeadlineSweeper, HTTPProtocol
from service.settings import Settings
from tests.adapters.fakes import FakeClock, FakeTransport


class Echo:
    """Answers each request with its path; paths under /slow wait for ``release``."""

    def __init__(self) -> None:
        self.release: asyncio.Event = asyncio.Event()
        self.seen: list[HTTPRequest] = []
        self.cancelled = 0

    def handle(self, request: HTTPRequest) -> Any:
        self.seen.append(request)
        if request.path.startswith("/slow"):
            return self._slow(request)
        return HTTPResponse(200, [("content-type", "text/plain")], request.path.encode())

    async def _slow(self, request: HTTPRequest) -> HTTPResponse:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return HTTPResponse(200, [], request.path.encode())


def connect(
    handler: Any = None, high_water: int | None = None, **overrides: Any
) -> tuple[HTTPProtocol, FakeTransport, FakeClock, Any]:
    clock = FakeClock()
    settings = Settings(**overrides)
    handler = handler or Echo()
    sweeper = DeadlineSweeper(cast(asyncio.AbstractEventLoop, clock), settings)
    protocol = HTTPProtocol(handler, settings, set(), sweeper, RequestIds())
    transport = FakeTransport(high_water=high_water)
    transport.protocol = protocol
    protocol.connection_made(cast(asyncio.Transport, transport))
    return protocol, transport, clock, handler


def get(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


def statuses(data: bytes) -> list[int]:
    """The status codes of the responses in ``data``, in order."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


async def test_pipelined_requests_are_answered_in_order() -> None:
    protocol, transport, _, handler = connect()
    protocol.data_received(get("/slow/1") + get("/two") + get("/three"))
    assert transport.take() == b""  # /two waits behind the slow first answer
    handler.release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    data = transport.take()
    assert statuses(data) == [200, 200, 200]
    assert data.index(b"/slow/1") < data.index(b"/two") < data.index(b"/three")


async def test_request_ids_come_from_nginx_or_the_server() -> None:
    protocol, _, _, handler = connect()
    protocol.data_received(get("/a", "X-Request-ID: from-nginx") + get("/b"))
    first, second = handler.seen
    assert first.request_id == "from-nginx"
    assert second.request_id and second.request_id != "from-nginx"


async def test_read_timeout_answers_408_on_the_fake_clock() -> None:
    protocol, transport, clock, _ = connect(request_read_timeout_s=30.0)
    protocol.data_received(b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    clock.advance(29.0)
    assert transport.take() == b"" and not transport.closed
    clock.advance(2.0)
    assert statuses(transport.take()) == [408]
    assert transport.closed


async def test_idle_keepalive_timeout_closes_silently() -> None:
    protocol, transport, clock, _ = connect(keepalive_timeout_s=75.0)
    protocol.data_received(get("/one"))
    assert statuses(transport.take()) == [200]
    clock.advance(74.0)
    assert not transport.closed
    clock.advance(2.0)
    assert transport.closed and transport.take() == b""


async def test_write_backpressure_pauses_reading() -> None:
    protocol, transport, _, _ = connect()
    protocol.pause_writing()
    assert not transport.reading
    protocol.resume_writing()
    assert transport.reading


async def test_a_pipelined_backlog_pauses_reading_until_it_drains() -> None:
    protocol, transport, _, handler = connect()
    protocol.data_received(get("/slow/0") + b"".join(get(f"/p{i}") for i in range(MAX_PIPELINE)))
    assert not transport.reading
    handler.release.set()
    for _ in range(3):
        await asyncio.sleep(0)
    assert transport.reading
    assert len(statuses(transport.take())) == MAX_PIPELINE + 1


async def test_body_over_the_limit_is_refused_before_it_is_sent() -> None:
    protocol, transport, _, handler = connect(max_body_bytes=100)
    protocol.data_received(
        b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
    )
    data = transport.take()
    assert statuses(data) == [413] and b"100 Continue" not in data
    assert transport.closed and handler.seen == []


async def test_client_disconnect_cancels_its_request() -> None:
    protocol, _, _, handler = connect()
    protocol.data_received(get("/slow/x"))
    await asyncio.sleep(0)
    protocol.connection_lost(None)
    for _ in range(3):
        await asyncio.sleep(0)
    assert handler.cancelled == 1


async def test_a_client_that_does_not_read_gets_one_response_beyond_the_mark() -> None:
    """Pipelined requests wait while the write buffer is over its high-water mark: a client
    that sends and never reads makes the worker buffer one response past the mark, not all."""
    big = "/" + "x" * 5000
    protocol, transport, _, _handler = connect(high_water=8192)
    protocol.data_received(b"".join(get(big) for _ in range(10)))
    assert len(statuses(bytes(transport.written))) == 2  # the second one crossed the mark
    assert transport.buffered < 8192 + 2 * 6000
    assert not transport.reading
    transport.drain()
    assert len(statuses(bytes(transport.written))) == 4
    for _ in range(10):
        transport.drain()
    assert len(statuses(bytes(transport.written))) == 10 and transport.reading
