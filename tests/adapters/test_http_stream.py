"""Streaming responses in the native HTTP/1.1 protocol, against a fake transport: chunked
framing, keep-alive after the stream, waiting while the client does not read, cancellation
when the client leaves or the server shuts down."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from service.engine.http import HTTPRequest, HTTPResponse, HTTPStream
from tests.adapters.test_http_protocol import connect, get, statuses


class Streamer:
    """``/stream`` answers with a stream whose chunks the test feeds through ``feed``; other
    paths answer plainly."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = asyncio.Event()
        self.cancelled = False

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await self.feed.get()
                if chunk is None:
                    return
                yield chunk
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.closed.set()

    def handle(self, request: HTTPRequest) -> Any:
        if request.path == "/stream":
            return HTTPStream(
                200, [("content-type", "text/event-stream")], b"", chunks=self._chunks()
            )
        return HTTPResponse(200, [], request.path.encode())


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_a_stream_is_written_chunked_then_keep_alive_goes_on() -> None:
    protocol, transport, _, handler = connect(Streamer())
    protocol.data_received(get("/stream") + get("/after"))
    await settle()
    head = transport.take()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked\r\n" in head and b"content-length" not in head
    handler.feed.put_nowait(b"event: next\n\n")
    await settle()
    assert transport.take() == b"d\r\nevent: next\n\n\r\n"
    handler.feed.put_nowait(None)
    await settle()
    data = transport.take()
    assert data.startswith(b"0\r\n\r\n")  # the last chunk, then the pipelined request's answer
    assert statuses(data) == [200] and data.endswith(b"/after")
    assert not transport.closed


async def test_a_stream_waits_while_the_client_does_not_read() -> None:
    protocol, transport, _, handler = connect(Streamer(), high_water=150)
    protocol.data_received(get("/stream"))
    await settle()
    transport.take()
    handler.feed.put_nowait(b"x" * 100)  # over the mark: pause_writing
    handler.feed.put_nowait(b"second")
    await settle()
    assert protocol.write_paused
    assert b"second" not in bytes(transport.written)
    assert handler.feed.qsize() == 0  # taken from the body, held until the client reads
    transport.drain()
    await settle()
    assert transport.take().endswith(b"6\r\nsecond\r\n")


async def test_a_client_that_leaves_cancels_and_closes_the_stream() -> None:
    protocol, _, _, handler = connect(Streamer())
    protocol.data_received(get("/stream"))
    await settle()
    assert protocol.pending_tasks()
    protocol.connection_lost(None)
    await asyncio.wait_for(handler.closed.wait(), 5)
    assert handler.cancelled
    await settle()
    assert not protocol.pending_tasks()


async def test_shutdown_ends_a_stream_and_closes_the_connection() -> None:
    protocol, transport, _, handler = connect(Streamer())
    protocol.data_received(get("/stream"))
    await settle()
    protocol.shutdown()
    await asyncio.wait_for(handler.closed.wait(), 5)
    await settle()
    assert transport.closed


async def test_without_keep_alive_the_close_delimits_the_body() -> None:
    protocol, transport, _, handler = connect(Streamer())
    protocol.data_received(get("/stream", "Connection: close"))
    await settle()
    head = transport.take()
    assert b"connection: close\r\n" in head and b"transfer-encoding" not in head
    handler.feed.put_nowait(b"raw")
    handler.feed.put_nowait(None)
    await settle()
    assert transport.take() == b"raw"
    assert transport.closed


async def test_a_failing_stream_is_cut_and_logged_as_500() -> None:
    logged: list[int] = []

    class Failing:
        async def _chunks(self) -> AsyncIterator[bytes]:
            yield b"one"
            raise RuntimeError("boom")

        def handle(self, request: HTTPRequest) -> Any:
            return HTTPStream(200, [], b"", chunks=self._chunks())

    protocol, transport, _, _ = connect(Failing())
    protocol.log_request = lambda request, response, duration: logged.append(response.status)
    protocol.data_received(get("/stream"))
    await settle()
    data = transport.take()
    assert re.search(rb"3\r\none\r\n$", data)
    assert transport.closed and logged == [500]
