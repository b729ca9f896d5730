"""The native transport: an asyncio ``Protocol`` on uvloop, HTTP/1.1 parsed by httptools.

What it does, and where:
- Keep-alive and pipelining: parsed requests queue per connection and are answered strictly in
  order, one at a time (RFC 9112 section 9.3.2).
- Chunked request bodies are de-chunked by httptools; ``Expect: 100-continue`` is answered with
  ``100 Continue`` once the headers pass the limits, or with 413 before the body is sent.
- Limits: total header bytes (431), body bytes (413), a read timeout from the first byte of a
  request to its end (408) and an idle keep-alive timeout (silent close).
- Flow control: while the transport's write buffer is over its high-water mark
  (``pause_writing``), reading pauses and no further pipelined request is answered, so a client
  that sends but never reads makes the worker buffer at most one response beyond the mark;
  reading also pauses while ``MAX_PIPELINE`` requests wait.
- A client that disconnects mid-request cancels that request's task.
- ``Upgrade: websocket`` requests are handed to the WebSocket handler with the bytes after them.
- Streaming responses (``HTTPStream``: GraphQL over SSE, multipart subscriptions): the head
  goes out at once, then each body chunk as it is produced, with ``transfer-encoding:
  chunked`` (or, when the connection closes after it, delimited by the close). While the client
  does not read (``pause_writing``) the stream waits; when the client disconnects, the stream is
  cancelled and its body closed (the subscription ends). A graceful shutdown ends streams.

The response bytes are assembled here; parsing is httptools' job, never ours.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import http
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httptools
import orjson

from service.engine.http import HTTPRequest, HTTPResponse, HTTPStream, RequestIds
from service.settings import Settings

MAX_PIPELINE = 16

_STATUS_LINES = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode("latin-1") for s in http.HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _DateCache:
    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = b"date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self.value


_date = _DateCache()


class Handler(Protocol):
    """What the transport serves: ``handle`` answers a request (maybe asynchronously)."""

    def handle(self, request: HTTPRequest) -> HTTPResponse | Awaitable[HTTPResponse]: ...


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def encode_response(response: HTTPResponse, keep_alive: bool) -> bytes:
    """Serialize status line, headers and body (HTTP/1.1, RFC 9112 section 4 and 6)."""
    parts = [_STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} \r\n".encode()]
    parts.append(_date.get())
    for name, value in response.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if response.status != 204 and response.status >= 200:  # RFC 9110 8.6: none on 1xx, 204
        parts.append(b"content-length: %d\r\n" % len(response.body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(response.body)
    return b"".join(parts)


def encode_stream_head(stream: HTTPStream, chunked: bool, keep_alive: bool) -> bytes:
    """Status line and headers of a streamed response: chunked (HTTP/1.1), or delimited by
    closing the connection when it is not kept alive."""
    parts = [_STATUS_LINES.get(stream.status) or f"HTTP/1.1 {stream.status} \r\n".encode()]
    parts.append(_date.get())
    for name, value in stream.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1"))
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def simple_response(
    status: int, message: str, headers: list[tuple[str, str]] | None = None
) -> HTTPResponse:
    """A GraphQL-shaped error response for transport-level failures."""
    body = orjson.dumps({"errors": [{"message": message}]})
    return HTTPResponse(
        status, [("content-type", "application/json; charset=utf-8"), *(headers or [])], body
    )


WebSocketHandler = Callable[["HTTPProtocol", HTTPRequest, bytes], None]
RequestLogger = Callable[[HTTPRequest, HTTPResponse, float], None]


class DeadlineSweeper:
    """Checks the read and idle deadlines of a server's connections a few times per timeout
    period (cheaper than ``call_later`` plus ``cancel`` twice per request). One per server; it
    reads the time from the loop it is given, so tests can give it a fake clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: Settings) -> None:
        self.loop = loop
        self.connections: set[HTTPProtocol] = set()
        shortest = min(settings.keepalive_timeout_s, settings.request_read_timeout_s)
        self.interval = min(1.0, max(0.05, shortest / 4)) if shortest > 0 else 1.0
        self.handle: asyncio.TimerHandle | None = None

    def add(self, conn: HTTPProtocol) -> None:
        self.connections.add(conn)
        if self.handle is None:
            self.handle = self.loop.call_later(self.interval, self.tick)

    def discard(self, conn: HTTPProtocol) -> None:
        self.connections.discard(conn)

    def tick(self) -> None:
        """Run every connection's expired deadline, then re-arm while connections remain."""
        now = self.loop.time()
        for conn in list(self.connections):
            conn.check_deadline(now)
        self.handle = self.loop.call_later(self.interval, self.tick) if self.connections else None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class HTTPProtocol(asyncio.Protocol):
    """One client connection. Created by ``loop.create_server`` per accepted socket.

    Everything it works with is given: the ``handler`` that answers requests, the server's
    ``connections`` set, its ``sweeper`` (deadlines, and through it the loop and clock), its
    request ``ids``, the WebSocket upgrade hook and the request logger.
    """

    def __init__(
        self,
        handler: Handler,
        settings: Settings,
        connections: set[Any],
        sweeper: DeadlineSweeper,
        ids: RequestIds,
        *,
        websocket: WebSocketHandler | None = None,
        log_request: RequestLogger | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.connections = connections
        self.sweeper = sweeper
        self.ids = ids
        self.websocket = websocket
        self.log_request = log_request
        self.loop = sweeper.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        # Per-request parse state.
        self._url: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._upgrade_request: HTTPRequest | None = None
        # Per-connection state.
        self.queue: deque[tuple[HTTPRequest, bool, float]] = deque()
        self.busy = False
        self.closing = False
        self.task: asyncio.Future[Any] | None = None
        self.deadline: float | None = None
        self.on_deadline: Callable[[], None] = self._on_idle_timeout
        self.read_paused = False
        self.write_paused = False
        self.upgraded = False
        self.streaming = False
        self._writable: asyncio.Future[None] | None = None

    # --- connection lifecycle -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote = f"{peer[0]}:{peer[1]}"
        else:
            self.remote = "unix"
        self.connections.add(self)
        self.sweeper.add(self)
        self._arm(self.settings.keepalive_timeout_s, self._on_idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.sweeper.discard(self)
        self.closing = True
        self._disarm()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()
        self.transport = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._set_reading()
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # a stream waiting for its client to read goes on
        if not self.busy:
            self._next()  # pipelined requests held back while the client was not reading

    def _set_reading(self) -> None:
        want_pause = self.write_paused or len(self.queue) >= MAX_PIPELINE
        if self.transport is None or want_pause == self.read_paused:
            return
        self.read_paused = want_pause
        if want_pause:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        # No timer per request: a deadline the loop's sweeper checks (cheaper than call_later
        # plus cancel twice per request).
        if delay > 0:
            self.deadline = self.loop.time() + delay
            self.on_deadline = callback
        else:
            self.deadline = None

    def _disarm(self) -> None:
        self.deadline = None

    def check_deadline(self, now: float) -> None:
        """Called by the sweeper: run the armed timeout if its deadline passed."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            self.deadline = None
            self.on_deadline()

    def _on_idle_timeout(self) -> None:
        if self.transport is not None and not self.busy and not self.queue:
            self.transport.close()

    def _on_read_timeout(self) -> None:
        if self.busy or self.queue:
            # An earlier pipelined request is still being answered; the slow request is only
            # timed once the pipeline drains, so re-arm rather than interleave a 408.
            self._arm(self.settings.request_read_timeout_s, self._on_read_timeout)
            return
        self.fail(408, "Timed out reading the request.")

    def pending_tasks(self) -> list[asyncio.Future[Any]]:
        """Tasks this connection owns that have not finished (for a bounded shutdown)."""
        return [self.task] if self.task is not None and not self.task.done() else []

    def shutdown(self, idle_linger_s: float = 0.0) -> None:
        """Graceful stop: close after the response in progress; when idle, now, or after
        ``idle_linger_s`` seconds if no request comes. A request that comes meanwhile is
        answered with ``connection: close`` and the connection closes after it: a proxy that
        picked this pooled connection just as the stop began gets its answer instead of a
        closed socket (nginx retries those on another slot, but during a reload every slot is
        closing its idle connections at once)."""
        self.closing = True
        if self.streaming and self.task is not None:
            self.task.cancel()  # ends the stream; the connection closes once it unwound
            return
        if self.transport is not None and not self.busy and not self.queue and not self.upgraded:
            if idle_linger_s > 0:
                self._arm(idle_linger_s, self._on_idle_timeout)
            else:
                self.transport.close()

    # --- parsing ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._start_upgrade(data[offset:] if isinstance(offset, int) else b"")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, _Reject):
                self.fail(cause.status, cause.message)
            else:
                self.fail(400, "Malformed HTTP request.")
        except httptools.HttpParserError as exc:
            self.fail(400, f"Malformed HTTP request: {exc}.")

    def on_message_begin(self) -> None:
        self._url = []
        self._headers = {}
        self._header_bytes = 0
        self._body = []
        self._body_size = 0
        self._arm(self.settings.request_read_timeout_s, self._on_read_timeout)

    def on_url(self, url: bytes) -> None:
        self._header_bytes += len(url)
        if self._header_bytes > self.settings.max_header_bytes:
            raise _Reject(414, "The request target is too long.")
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.settings.max_header_bytes:
            raise _Reject(431, "The request headers are too large.")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else previous + ", " + text

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.max_body_bytes:
            raise _Reject(413, self._too_large())
        if self.parser.should_upgrade():
            return
        if self._headers.get("expect", "").lower() == "100-continue" and self.transport is not None:
            self.transport.write(_CONTINUE)

    def _too_large(self) -> str:
        return f"The request body is larger than the limit of {self.settings.max_body_bytes} bytes."

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.settings.max_body_bytes:
            raise _Reject(413, self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        raw_url = b"".join(self._url)
        path, _, query = raw_url.partition(b"?")
        headers = self._headers
        request = HTTPRequest(
            self.parser.get_method().decode("latin-1"),
            path.decode("latin-1"),
            query.decode("latin-1"),
            headers,
            b"".join(self._body),
            self.remote,
            self.ids.for_headers(headers),
        )
        if self.parser.should_upgrade():
            self._upgrade_request = request
            return
        self._disarm()
        self.queue.append((request, self.parser.should_keep_alive(), time.perf_counter()))
        self._set_reading()
        if not self.busy:
            self._next()

    # --- responding ---------------------------------------------------------------------------
    def _next(self) -> None:
        # While the client does not read (the write buffer is over its high-water mark), the
        # next pipelined request waits: at most one response sits in the buffer beyond the mark.
        while self.queue and not self.busy and not self.write_paused and self.transport is not None:
            request, keep_alive, t0 = self.queue.popleft()
            self._set_reading()
            try:
                result = self.handler.handle(request)
            except Exception:  # the core never raises for input; this is our bug
                result = simple_response(500, "Internal server error.")
            if isinstance(result, HTTPResponse):
                if isinstance(result, HTTPStream):
                    self._start_stream(request, result, keep_alive, t0)
                    return
                self._send(request, result, keep_alive, t0)
                continue
            self.busy = True
            task = asyncio.ensure_future(result)
            self.task = task
            task.add_done_callback(functools.partial(self._done, request, keep_alive, t0))
            return
        if not self.queue and not self.busy and self.transport is not None:
            if self.closing:
                self.transport.close()
            elif self._upgrade_request is None:
                self._arm(self.settings.keepalive_timeout_s, self._on_idle_timeout)

    def _done(
        self, request: HTTPRequest, keep_alive: bool, t0: float, fut: asyncio.Future[Any]
    ) -> None:
        self.busy = False
        self.task = None
        if fut.cancelled():
            return
        exc = fut.exception()
        response = simple_response(500, "Internal server error.") if exc else fut.result()
        if isinstance(response, HTTPStream):
            self._start_stream(request, response, keep_alive, t0)
            return
        self._send(request, response, keep_alive, t0)
        self._next()

    # --- streaming responses ------------------------------------------------------------------
    def _start_stream(
        self, request: HTTPRequest, stream: HTTPStream, keep_alive: bool, t0: float
    ) -> None:
        transport = self.transport
        keep_alive = keep_alive and not self.closing
        self.busy = True
        self.streaming = True
        if transport is not None:
            transport.write(encode_stream_head(stream, keep_alive, keep_alive))
        task = asyncio.ensure_future(self._write_stream(stream, keep_alive))
        self.task = task
        task.add_done_callback(
            functools.partial(self._stream_done, request, stream, keep_alive, t0)
        )

    async def _write_stream(self, stream: HTTPStream, chunked: bool) -> None:
        """Write the body's chunks as they come, waiting while the client does not read."""
        body = stream.chunks
        if body is None:
            return
        try:
            async for chunk in body:
                if not chunk:
                    continue
                while self.write_paused and self.transport is not None:
                    waiter = asyncio.get_running_loop().create_future()
                    self._writable = waiter
                    try:
                        await waiter
                    finally:
                        self._writable = None
                transport = self.transport
                if transport is None:
                    return
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            if chunked and self.transport is not None:
                self.transport.write(b"0\r\n\r\n")
        finally:
            closer = getattr(body, "aclose", None)
            if closer is not None:
                await closer()

    def _stream_done(
        self,
        request: HTTPRequest,
        stream: HTTPStream,
        keep_alive: bool,
        t0: float,
        fut: asyncio.Future[Any],
    ) -> None:
        self.busy = False
        self.streaming = False
        self.task = None
        clean = not fut.cancelled() and fut.exception() is None
        if not fut.cancelled() and fut.exception() is not None:
            stream.status = 500  # for the log line; the client sees the body cut short
            logging.getLogger("service.server").error(
                "streaming response failed", exc_info=fut.exception()
            )
        if self.log_request is not None:
            self.log_request(request, stream, time.perf_counter() - t0)
        transport = self.transport
        if transport is None:
            return
        if not clean or not keep_alive or self.closing:
            # A stream cut short cannot be told apart from its end except by the connection
            # closing; after a clean end without keep-alive the close delimits the body.
            self.closing = True
            self.queue.clear()
            transport.close()
            return
        self._next()

    def _send(
        self, request: HTTPRequest, response: HTTPResponse, keep_alive: bool, t0: float
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = keep_alive and not self.closing
        transport.write(encode_response(response, keep_alive))
        if self.log_request is not None:
            self.log_request(request, response, time.perf_counter() - t0)
        if not keep_alive:
            self.closing = True
            self.queue.clear()
            transport.close()

    def fail(self, status: int, message: str) -> None:
        """Answer a transport-level error and close the connection."""
        if self.transport is None:
            return
        response = simple_response(status, message)
        self.queue.clear()
        self.closing = True
        self._disarm()
        if self.busy:
            # Answering now would overtake the response in progress; drop the connection.
            self.transport.close()
            return
        self.transport.write(encode_response(response, False))
        self.transport.close()

    # --- WebSocket upgrade --------------------------------------------------------------------
    def _start_upgrade(self, trailing: bytes) -> None:
        request = self._upgrade_request
        self._upgrade_request = None
        self._disarm()
        if request is None or self.transport is None:
            self.fail(400, "Malformed upgrade request.")
            return
        if request.headers.get("upgrade", "").lower() != "websocket" or self.websocket is None:
            self.fail(400, "Only WebSocket upgrades are supported, on the GraphQL path.")
            return
        if self.busy or self.queue:
            self.fail(400, "A WebSocket upgrade cannot follow pipelined requests.")
            return
        self.upgraded = True
        self.sweeper.discard(self)  # the WebSocket owns the connection from here
        self.websocket(self, request, trailing)
