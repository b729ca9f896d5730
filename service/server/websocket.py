"""GraphQL over WebSocket: the session (transport-independent) and the native adapter.

``WSSession`` drives one protocol state machine (``graphql-transport-ws`` or legacy
``graphql-ws``, from ``service.protocols``) and runs the operations it starts. It needs only two
callbacks from its transport: ``send_text(str)`` and ``close(code, reason)``. The native adapter
(``NativeWebSocket``, framing by websockets' sans-I/O ``ServerProtocol``) and the ASGI adapter
(``service.server.asgi``) both use it.

Connection flow: the client's ``connection_init`` payload goes to ``ConnectApp.connect`` (build
the context, verify the token, run ``on_connect``); only then is ``connection_ack`` sent, and
the machine refuses operations before the ack. Each operation runs in its own task, owned by
the session and cancelled when the client stops it or the connection ends. A token with ``exp``
closes the socket with 4403 when it expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from graphql import GraphQLError
from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from service import metrics
from service.engine import errors as codes
from service.engine.executor import Engine, Outcome
from service.engine.http import HTTPRequest, new_request_id
from service.protocols.codes import ErrorCode
from service.protocols.http import HTTPError
from service.protocols.negotiate import choose_subprotocol, make_connection
from service.protocols.ws_messages import (
    LEGACY_WS_SUBPROTOCOL,
    TRANSPORT_WS_SUBPROTOCOL,
    Action,
    Close,
    Init,
    Send,
    Start,
    Stop,
)
from service.settings import Settings
from service.subscriptions import runtime

log = logging.getLogger("service.websocket")

SUBPROTOCOLS = [TRANSPORT_WS_SUBPROTOCOL, LEGACY_WS_SUBPROTOCOL]


class ConnectionRejected(Exception):
    """Raised by ``on_connect`` (or auth) to refuse a connection: 4403 / ``connection_error``."""


def _encode(message: Any) -> str:
    return orjson.dumps(message).decode()


OperationLogger = Callable[..., None]


class ConnectApp:
    """What a WebSocket session needs from the application.

    ``get_context(request)`` builds the connection context from the upgrade request (sync or
    async); ``authenticate(payload, context)`` may verify a token from the ``connection_init``
    payload and return the enriched context (raise ``ConnectionRejected`` to refuse);
    ``on_connect(payload, context)`` (sync or async) may return ``False`` or raise
    ``ConnectionRejected`` to refuse, or return a dict to merge into the context (dict contexts)
    and to send as the ``connection_ack`` payload under ``"ack"``.
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        get_context: Callable[[HTTPRequest], Any] | None = None,
        authenticate: Callable[[Any, Any], Any] | None = None,
        on_connect: Callable[[Any, Any], Any] | None = None,
        log_operation: OperationLogger | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.get_context = get_context
        self.authenticate = authenticate
        self.on_connect = on_connect
        self.log_operation = log_operation
        self.recorder = engine.recorder

    async def connect(
        self, request: HTTPRequest, payload: dict[str, Any]
    ) -> tuple[Any, dict[str, Any] | None]:
        """Return ``(context, ack_payload)`` or raise ``ConnectionRejected``."""
        if self.get_context is not None:
            try:
                context = self.get_context(request)
                if inspect.isawaitable(context):
                    context = await context
            except HTTPError as exc:
                raise ConnectionRejected(f"Forbidden: {exc.message}") from None
        else:
            context = {"request": request, "request_id": request.request_id, "user": None}
        if self.authenticate is not None:
            context = self.authenticate(payload, context)
            if inspect.isawaitable(context):
                context = await context
        ack = None
        if self.on_connect is not None:
            verdict = self.on_connect(payload, context)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is False:
                raise ConnectionRejected("Forbidden")
            if isinstance(verdict, dict):
                ack = verdict.get("ack")
                if isinstance(context, dict):
                    context.update({k: v for k, v in verdict.items() if k != "ack"})
        return context, ack


class WSSession:
    """One GraphQL WebSocket connection over any transport."""

    def __init__(
        self,
        app: ConnectApp,
        subprotocol: str,
        request: HTTPRequest,
        send_text: Callable[[str], None],
        close: Callable[[int, str], None],
    ) -> None:
        s = app.settings
        self.app = app
        self.engine = app.engine
        self.settings = s
        self.subprotocol = subprotocol
        self.request = request
        if not request.request_id:
            request.request_id = new_request_id(request.headers)
        self._send_text = send_text
        self._close = close
        self.loop = asyncio.get_running_loop()
        keepalive = s.ws_keepalive_s if s.ws_keepalive_s > 0 else None
        if subprotocol == TRANSPORT_WS_SUBPROTOCOL and not s.ws_transport_ping:
            keepalive = None
        self.machine = make_connection(
            subprotocol,
            now=self.loop.time(),
            init_timeout_s=s.ws_init_timeout_s,
            keepalive_s=keepalive,
            max_operations=s.ws_max_subscriptions,
            max_message_bytes=s.ws_max_message_bytes,
            encoder=_encode,
            # orjson, like the HTTP path: faster, and it refuses escaped lone surrogates
            # ("\ud800"), which the stdlib accepts but nothing can encode back to UTF-8.
            decoder=orjson.loads,
        )
        self.context: Any = None
        self.tasks: dict[str, asyncio.Task[None]] = {}  # running operations by id
        self.owned: set[asyncio.Task[None]] = set()  # every operation task not yet finished
        self.background: set[asyncio.Task[Any]] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.strict: asyncio.Lock | None = None
        self.closed = False
        metrics.WS_CONNECTIONS.labels(subprotocol).inc()
        self._schedule()

    # --- input ---------------------------------------------------------------------------------
    def receive_text(self, text: str) -> None:
        self.apply(self.machine.receive_text(text, self.loop.time()))

    def receive_bytes(self, data: bytes) -> None:
        self.apply(self.machine.receive_bytes(data, self.loop.time()))

    def shutdown(self, reason: str = "server shutting down") -> None:
        """Close with 1001 (going away); operations are cancelled."""
        self.apply(self.machine.close(1001, reason))

    def connection_lost(self) -> None:
        """The transport is gone: cancel every task and timer, release gauges."""
        if self.closed:
            return
        self.closed = True
        for timer in (self.timer, self.expiry):
            if timer is not None:
                timer.cancel()
        for task in list(self.tasks.values()) + list(self.background):
            task.cancel()
        metrics.WS_CONNECTIONS.labels(self.subprotocol).dec()

    # --- actions -------------------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Send):
                if not self.closed:
                    self._send_text(action.text)
            elif isinstance(action, Start):
                self._start(action.id, action.payload)
            elif isinstance(action, Stop):
                task = self.tasks.pop(action.id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(action, Init):
                self._spawn(self._init(action.payload))
            elif isinstance(action, Close):
                for task in list(self.tasks.values()):
                    task.cancel()
                self.tasks.clear()
                if not self.closed:
                    self._close(action.code, action.reason)
        self._schedule()

    def _schedule(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = None if self.closed else self.machine.next_deadline()
        if deadline is not None:
            self.timer = self.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self.timer = None
        self.apply(self.machine.tick(self.loop.time()))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("websocket task failed", exc_info=task.exception())

    # --- connection_init -------------------------------------------------------------------
    async def _init(self, payload: dict[str, Any]) -> None:
        try:
            context, ack = await asyncio.wait_for(
                self.app.connect(self.request, payload), self.settings.ws_init_timeout_s * 3
            )
        except ConnectionRejected as exc:
            self.apply(self.machine.reject(str(exc) or "Forbidden", self.loop.time()))
            return
        except Exception as exc:
            log.error("on_connect failed", exc_info=exc)
            self.apply(self.machine.close(4500, "Internal server error"))
            return
        self.context = context
        if isinstance(context, dict) and context.get("strict_ordering"):
            self.strict = asyncio.Lock()
        self._watch_expiry(context)
        self.apply(self.machine.accept(ack, self.loop.time()))

    def _watch_expiry(self, context: Any) -> None:
        user = context.get("user") if isinstance(context, dict) else None
        exp = user.get("exp") if isinstance(user, dict) else None
        if isinstance(exp, int | float):
            # Tokens are accepted with JWT_LEEWAY_S of clock skew; close when that runs out.
            delay = max(0.0, float(exp) + self.settings.jwt_leeway_s - time.time())
            self.expiry = self.loop.call_later(
                delay, lambda: self.apply(self.machine.close(4403, "Forbidden: token expired"))
            )

    # --- operations ------------------------------------------------------------------------
    def _start(self, op_id: str, payload: dict[str, Any]) -> None:
        task = self.loop.create_task(self._operation(op_id, payload))
        self.tasks[op_id] = task
        self.owned.add(task)
        task.add_done_callback(functools.partial(self._finished, op_id))

    def _finished(self, op_id: str, task: asyncio.Task[None]) -> None:
        self.owned.discard(task)
        if self.tasks.get(op_id) is task:
            del self.tasks[op_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("websocket operation failed", exc_info=task.exception())

    def _operation_context(self, op_id: str) -> Any:
        context = self.context
        if isinstance(context, dict):
            context = dict(context)
            context["request_id"] = f"{self.request.request_id}:{op_id}"
            context["operation_id"] = op_id
        return context

    def _report(self, op_id: str, kind: str, name: str | None, status: str, t0: float) -> None:
        self.app.recorder.request("ws", kind, status)
        logger = self.app.log_operation
        if logger is not None:
            user = self.context.get("user") if isinstance(self.context, dict) else None
            logger(
                request_id=f"{self.request.request_id}:{op_id}",
                subprotocol=self.subprotocol,
                op_id=op_id,
                operation_type=kind,
                operation_name=name,
                status=status,
                duration_s=time.perf_counter() - t0,
                user=user.get("sub") if isinstance(user, dict) else None,
            )

    async def _operation(self, op_id: str, payload: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        name = payload.get("operationName")
        kind = "unknown"
        status = "cancelled"
        try:
            metrics.INFLIGHT.inc()
            try:
                if self.strict is not None:
                    async with self.strict:
                        kind, status, stream = await self._setup(op_id, payload)
                else:
                    kind, status, stream = await self._setup(op_id, payload)
            finally:
                metrics.INFLIGHT.dec()
            # Queries and mutations: their whole time; subscriptions: the time to set up.
            self.app.recorder.duration(kind, name, time.perf_counter() - t0)
            if stream is not None:
                status = await self._pump(op_id, stream)
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception as exc:
            status = "error"
            log.error("operation %s failed", op_id, exc_info=exc)
            body = {
                "errors": [codes.error("Internal server error", ErrorCode.INTERNAL_SERVER_ERROR)]
            }
            self.apply(self.machine.error(op_id, body["errors"]))
        finally:
            self._report(op_id, kind, name, status, t0)

    async def _setup(self, op_id: str, payload: dict[str, Any]) -> tuple[str, str, Any]:
        """Prepare and run a query/mutation, or start a subscription (returned to pump)."""
        engine = self.engine
        name = payload.get("operationName")
        variables = payload.get("variables")
        cached, kind, failure = engine.prepare(payload["query"], name)
        if failure is not None:
            self.apply(self.machine.error(op_id, failure.body["errors"]))
            return kind, "rejected", None
        assert cached is not None
        context = self._operation_context(op_id)
        if kind != "subscription":
            outcome = engine.execute(cached, kind, variables, name, context)
            if not isinstance(outcome, Outcome):
                outcome = await outcome
            return kind, self._deliver_final(op_id, outcome), None
        started = await engine.subscribe(cached, variables, name, context)
        if isinstance(started, Outcome):
            # The source stream could not start (the subscribe resolver raised, or variables
            # failed): PROTOCOL.md answers with `error`, not `next`.
            errors = started.body.get("errors") or [
                codes.error("Subscription failed.", ErrorCode.INTERNAL_SERVER_ERROR)
            ]
            self.apply(self.machine.error(op_id, errors))
            return kind, "rejected", None
        if self.settings.confirm_subscriptions:
            self.apply(self.machine.next(op_id, {"data": None}))
        return kind, "ok", started

    def _deliver_final(self, op_id: str, outcome: Outcome) -> str:
        if outcome.request_error:
            self.apply(self.machine.error(op_id, outcome.body["errors"]))
            return "rejected"
        self.apply(self.machine.next(op_id, outcome.body))
        self.apply(self.machine.complete(op_id))
        return "error" if outcome.body.get("errors") else "ok"

    async def _pump(self, op_id: str, stream: Any) -> str:
        sent = metrics.NOTIFICATIONS_SENT
        lag = metrics.FANOUT_LAG
        try:
            try:
                async for outcome in stream:
                    if not self.writable.is_set():
                        await self.writable.wait()
                    self.apply(self.machine.next(op_id, outcome.body))
                    sent.inc()
                    sent_at = runtime.FANOUT_SENT_AT.get()
                    if sent_at is not None:
                        lag.observe(max(0.0, time.time() - sent_at))
                        runtime.FANOUT_SENT_AT.set(None)
                    # A queued backlog never suspends __anext__: yield so other subscribers,
                    # the heartbeat and new connections get the loop between notifications.
                    await asyncio.sleep(0)
            except GraphQLError as exc:
                # The source stream failed mid-way with a GraphQL error: report it and end.
                self.apply(self.machine.error(op_id, [exc.formatted]))  # type: ignore[list-item]
                return "error"
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()
        self.apply(self.machine.complete(op_id))
        return "complete"


class NativeWebSocket(asyncio.Protocol):
    """A WebSocket on the native transport: websockets' ``ServerProtocol`` frames, the session
    speaks GraphQL. Takes over the connection from ``HTTPProtocol`` after the upgrade."""

    def __init__(self, app: ConnectApp, http: Any, request: HTTPRequest) -> None:
        self.app = app
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

    def start(self, trailing: bytes) -> None:
        target = self.request.path + (
            f"?{self.request.query_string}" if self.request.query_string else ""
        )
        # httptools already parsed the upgrade request; replay it to websockets' handshake
        # parser so the handshake stays entirely websockets' (public sans-I/O API).
        head = [f"GET {target} HTTP/1.1\r\n".encode("latin-1")]
        for key, value in self.request.headers.items():
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
            subprotocols=SUBPROTOCOLS,  # type: ignore[arg-type]
            select_subprotocol=select,
            max_size=self.app.settings.ws_max_message_bytes,
        )
        self.ws.receive_data(b"".join(head))
        events = self.ws.events_received()
        if events and isinstance(events[0], Request):
            response = self.ws.accept(events[0])
        else:
            response = self.ws.reject(400, "Malformed WebSocket upgrade request.\n")
        if self.request.path != "/graphql":
            response = self.ws.reject(404, "WebSocket is served on /graphql\n")
        self.ws.send_response(response)
        self.connections.discard(self.http)
        self.connections.add(self)
        self.transport.set_protocol(self)
        if response.status_code != 101:
            self._flush()
            self.transport.close()
            return
        subprotocol = response.headers.get("Sec-WebSocket-Protocol", "")
        self.session = WSSession(self.app, subprotocol, self.request, self._send_text, self._close)
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
                self._close(1007, "invalid UTF-8 in a text frame")
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
        if self.session is not None:
            self.session.writable.clear()

    def resume_writing(self) -> None:
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
            else:
                transport.close()
                return
        if self.ws.close_expected() and self.close_timer is None:
            loop = asyncio.get_running_loop()
            self.close_timer = loop.call_later(5.0, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _send_text(self, text: str) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_text(text.encode())
            self._flush()

    def _close(self, code: int, reason: str) -> None:
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
            self._flush()
        if self.session is not None:
            self.session.connection_lost()

    def pending_tasks(self) -> list[asyncio.Future[Any]]:
        """The session's operation and background tasks that have not finished."""
        if self.session is None:
            return []
        owned = [*self.session.owned, *self.session.background]
        return [task for task in owned if not task.done()]

    def shutdown(self) -> None:
        if self.session is not None:
            self.session.shutdown()
        elif self.transport is not None:
            self.transport.close()


def make_websocket_handler(
    engine: Engine,
    core: Any,
    settings: Settings,
    get_context: Callable[[HTTPRequest], Any] | None,
    on_connect: Callable[[Any, Any], Any] | None,
    *,
    authenticate: Callable[[Any, Any], Any] | None = None,
    log_operation: OperationLogger | None = None,
) -> Callable[[Any, HTTPRequest, bytes], None]:
    """The native transport's upgrade hook for ``build_server``."""
    app = ConnectApp(
        engine,
        settings,
        get_context=get_context,
        authenticate=authenticate,
        on_connect=on_connect,
        log_operation=log_operation,
    )

    def handle(http: Any, request: HTTPRequest, trailing: bytes) -> None:
        NativeWebSocket(app, http, request).start(trailing)

    return handle
