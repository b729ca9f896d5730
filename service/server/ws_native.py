"""The native WebSocket adapter: websockets' sans-I/O ``ServerProtocol`` frames the bytes,
``WSSession`` speaks GraphQL.

``HTTPProtocol`` hands a connection over at ``Upgrade: websocket``; the handshake (RFC 6455
section 4) is websockets' own, the subprotocol choice ours (``service.protocols.negotiate``).
WebSocket-level pings every ``WS_KEEPALIVE_S`` keep idle sockets alive through proxies and
drop peers that stopped answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from service.engine.http import HTTPRequest
from service.protocols.codes import CloseCode
from service.protocols.negotiate import SUBPROTOCOLS, choose_subprotocol
from service.protocols.ws_machine import NEXT_TAIL
from service.server.ws_session import ConnectApp, WSSession

__all__ = ["NativeWebSocket", "make_websocket_handler"]

#: How long to wait for the client's close frame after ours before dropping the connection.
CLOSE_TIMEOUT_S = 5.0

#: The request headers websockets' ``ServerProtocol.accept`` reads (RFC 6455 section 4.2.1).
_HANDSHAKE_HEADERS = frozenset(
    {
        "host",
        "connection",
        "upgrade",
        "origin",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)

#: Unmasked text frame headers by payload length (``_frame``), for this many lengths.
_HEADERS: dict[int, bytes] = {}
_HEADERS_KEPT = 4096

#: The last result frame made (``_send_result``): ``(head, result, frame)``.
_last_result: tuple[bytes, bytes | None, bytes] = (b"", None, b"")


class NativeWebSocket(asyncio.Protocol):
    """A WebSocket on the native transport: websockets' ``ServerProtocol`` frames, the session
    speaks GraphQL. Takes over the connection from ``HTTPProtocol`` after the upgrade."""

    def __init__(self, app: ConnectApp, http: Any, request: HTTPRequest, path: str) -> None:
        self.app = app
        self.path = path
        self.http = http
        self.request = request
        self.transport: Any = http.transport
        self.connections = http.connections
        self.session: WSSession | None = None
        self.fragments: list[bytes] = []
        self.fragment_opcode: Opcode | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.awaiting_pong = False
        self.pings_sent = 0
        # Flow control: bytes written since the transport last went over its high-water mark.
        self.write_paused = False
        self.unread_bytes = 0

    def start(self, trailing: bytes) -> None:
        target = self.request.path + (
            f"?{self.request.query_string}" if self.request.query_string else ""
        )
        # httptools already parsed the upgrade request; replay it to websockets' handshake
        # parser so the handshake stays entirely websockets' (public sans-I/O API).
        # Only the headers the handshake reads: websockets' parser keeps the request it parsed
        # for the connection's lifetime, and the rest (cookies, user agent, proxy headers)
        # would cost every idle connection their size again; the session has them all.
        head = [f"GET {target} HTTP/1.1\r\n".encode("latin-1")]
        for key, value in self.request.headers.items():
            if key.lower() in _HANDSHAKE_HEADERS:
                head.append(f"{key}: {value}\r\n".encode("latin-1"))
        head.append(b"\r\n")

        def select(protocol: ServerProtocol, offered: Any) -> Any:
            chosen = choose_subprotocol(offered)
            if chosen is None:
                raise NegotiationError(
                    "no supported subprotocol: offer graphql-transport-ws or graphql-ws in "
                    "Sec-WebSocket-Protocol"
                )
            return chosen

        self.ws = ServerProtocol(
            subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
            select_subprotocol=select,
            max_size=self.app.settings.ws_max_message_bytes,
        )
        self.ws.receive_data(b"".join(head))
        events = self.ws.events_received()
        if events and isinstance(events[0], Request):
            response = self.ws.accept(events[0])
        else:
            response = self.ws.reject(400, "Malformed WebSocket upgrade request.\n")
        if self.request.path != self.path:
            response = self.ws.reject(404, f"WebSocket is served on {self.path}\n")
        self.ws.send_response(response)
        self.connections.discard(self.http)
        self.connections.add(self)
        self.http = None  # its parser and buffers are done with
        self.transport.set_protocol(self)
        if response.status_code != 101:
            self._flush()
            self.transport.close()
            return
        subprotocol = response.headers.get("Sec-WebSocket-Protocol", "")
        self.session = WSSession(
            self.app,
            subprotocol,
            self.request,
            self._send_text,
            self._close,
            send_result=self._send_result,
        )
        self._flush()
        interval = self.app.settings.ws_keepalive_s
        if interval > 0:
            self.ping_timer = asyncio.get_running_loop().call_later(interval, self._keepalive)
        if trailing:
            self.data_received(trailing)

    def _keepalive(self) -> None:
        """WebSocket-level ping every ``WS_KEEPALIVE_S``: it keeps idle sockets alive through
        proxies (nginx's ``proxy_read_timeout``) for both subprotocols, without a message the
        client must understand, and a peer that did not answer the previous ping is dead."""
        self.ping_timer = None
        if self.transport is None or self.ws.state is not State.OPEN:
            return
        if self.awaiting_pong:
            self.transport.abort()  # no pong for a whole interval: the peer is gone
            return
        self.awaiting_pong = True
        self.pings_sent += 1
        self.ws.send_ping(b"ka")
        self._flush()
        interval = self.app.settings.ws_keepalive_s
        self.ping_timer = asyncio.get_running_loop().call_later(interval, self._keepalive)

    # --- asyncio.Protocol ----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        session = self.session
        for frame in ws.events_received():
            if not isinstance(frame, Frame):
                continue
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if not frame.fin:
                    self.fragment_opcode = opcode
                    self.fragments = [bytes(frame.data)]
                    continue
                self._message(opcode, bytes(frame.data))
            elif opcode is Opcode.PONG:
                self.awaiting_pong = False
            elif opcode is Opcode.CONT and self.fragment_opcode is not None:
                self.fragments.append(bytes(frame.data))
                if frame.fin:
                    data_all = b"".join(self.fragments)
                    kind, self.fragment_opcode, self.fragments = self.fragment_opcode, None, []
                    self._message(kind, data_all)
        self._flush()
        if session is not None and ws.state in (State.CLOSING, State.CLOSED):
            session.connection_lost()

    def _message(self, opcode: Opcode, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        if opcode is Opcode.TEXT:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                self._close(CloseCode.InvalidFramePayloadData, "invalid UTF-8 in a text frame")
                return
            session.receive_text(text)
        else:
            session.receive_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        for timer in (self.close_timer, self.ping_timer):
            if timer is not None:
                timer.cancel()
        if self.session is not None:
            self.session.connection_lost()
        self.transport = None

    def pause_writing(self) -> None:
        """The client is not reading fast enough: stop reading its frames (no more pings to
        answer, no more operations to start) and hold the session's results back."""
        self.write_paused = True
        self.unread_bytes = 0
        if self.transport is not None:
            self.transport.pause_reading()
        if self.session is not None:
            self.session.writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        if self.session is not None:
            self.session.writable.set()

    # --- output --------------------------------------------------------------------------------
    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
                if self.write_paused:
                    self.unread_bytes += len(chunk)
            else:
                transport.close()
                return
        if self.unread_bytes > self.app.settings.ws_max_unread_bytes:
            self._drop_slow_reader()
            return
        if self.ws.close_expected() and self.close_timer is None:
            loop = asyncio.get_running_loop()
            self.close_timer = loop.call_later(CLOSE_TIMEOUT_S, self._abort)

    def _drop_slow_reader(self) -> None:
        """More than ``WS_MAX_UNREAD_BYTES`` were written while the client was not reading:
        close with 1008 (policy violation) and drop the connection rather than buffer more."""
        limit = self.app.settings.ws_max_unread_bytes
        if self.ws.state is State.OPEN:
            self.ws.send_close(
                CloseCode.PolicyViolation, f"not reading: over {limit} bytes waiting to be sent"
            )
            for chunk in self.ws.data_to_send():
                if chunk and self.transport is not None:
                    self.transport.write(chunk)
        if self.session is not None:
            self.session.connection_lost()
        if self.transport is not None:
            self.transport.abort()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send_text(self, text: str) -> None:
        self._send_utf8(text.encode())

    def _send_result(self, head: bytes, result: bytes) -> None:
        """``WSSession``'s ``send_result``: the text message ``head + result + NEXT_TAIL``.
        Subscribers of one event share its encoded ``result`` (the same bytes object) and
        mostly their operation's ``head`` too (clients number operations alike): then they
        share the whole frame, made once."""
        global _last_result
        last_head, last_result, frame = _last_result
        if result is last_result and head == last_head:
            transport = self.transport
            if transport is not None and not self.write_paused and self.ws.state is State.OPEN:
                transport.write(frame)  # the common case: _write_frame's, inlined
                return
        else:
            made = self._frame(b"".join((head, result, NEXT_TAIL)))
            if made is None:
                return
            frame = made
            _last_result = (head, result, frame)
        self._write_frame(frame)

    def _send_utf8(self, data: bytes) -> None:
        """Send one unfragmented text message whose payload is ``data`` (UTF-8)."""
        frame = self._frame(data)
        if frame is not None:
            self._write_frame(frame)

    def _frame(self, data: bytes) -> bytes | None:
        """The unmasked text frame carrying ``data`` (RFC 6455 section 5.2), as websockets'
        ``Frame.serialize`` makes it. With no extension negotiated its header depends only on
        the payload's length, so the header serialized once for a length is reused for every
        frame of that length. ``None`` when the frame was sent already (extensions: websockets
        frames and sends it) or cannot be (the connection is not open)."""
        if self.ws.state is not State.OPEN or self.transport is None:
            return None
        if self.ws.extensions:
            self.ws.send_text(data)
            self._flush()
            return None
        size = len(data)
        header = _HEADERS.get(size)
        if header is None:
            frame = Frame(Opcode.TEXT, data).serialize(mask=False, extensions=[])
            header = frame[: len(frame) - size]
            if len(_HEADERS) < _HEADERS_KEPT:
                _HEADERS[size] = header
        return header + data

    def _write_frame(self, frame: bytes) -> None:
        """Write a frame straight to the transport (after whatever the protocol object had
        buffered: ``_flush`` empties it after every use); counts what a paused client has
        not read."""
        transport = self.transport
        if transport is None or self.ws.state is not State.OPEN:
            return
        transport.write(frame)
        if self.write_paused:
            self.unread_bytes += len(frame)
            if self.unread_bytes > self.app.settings.ws_max_unread_bytes:
                self._drop_slow_reader()

    def _close(self, code: int, reason: str) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        if self.session is not None:
            self.session.connection_lost()

    def pending_tasks(self) -> list[asyncio.Future[Any]]:
        """The session's operation and background tasks that have not finished."""
        return [] if self.session is None else self.session.pending()

    def shutdown(self, code: int = CloseCode.GoingAway) -> None:
        """Close with ``code`` (1001 Going Away by default, 1012 Service Restart on a reload);
        the session's operations end."""
        if self.session is not None:
            self.session.shutdown(code=code)
        elif self.transport is not None:
            self.transport.close()


def make_websocket_handler(app: ConnectApp, path: str) -> Callable[[Any, HTTPRequest, bytes], None]:
    """The native transport's upgrade hook: WebSocket on ``path`` (the GraphQL path)."""

    def handle(http: Any, request: HTTPRequest, trailing: bytes) -> None:
        NativeWebSocket(app, http, request, path).start(trailing)

    return handle
