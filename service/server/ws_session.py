"""GraphQL over WebSocket, independent of the transport: ``ConnectApp`` and ``WSSession``.

``WSSession`` drives one protocol state machine (``graphql-transport-ws`` or legacy
``graphql-ws``, from ``service.protocols``) and runs the operations it starts. It needs only two
callbacks from its transport: ``send_text(str)`` and ``close(code, reason)``. The native adapter
(``service.server.ws_native``, framing by websockets' sans-I/O ``ServerProtocol``) and the ASGI
adapter (``service.server.asgi``) both use it.

Connection flow: the client's ``connection_init`` payload goes to ``ConnectApp.connect`` (build
the context, verify the token, run ``on_connect``); only then is ``connection_ack`` sent, and
the machine refuses operations before the ack. Each operation runs in its own task, owned by
the session and cancelled when the client stops it or the connection ends, however it ends.
A token with ``exp`` closes the socket with 4403 at ``exp + JWT_LEEWAY_S``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from graphql import GraphQLError

from service.auth import seconds_until_expiry
from service.engine import errors as codes
from service.engine.context import user_sub
from service.engine.executor import Engine, Outcome
from service.engine.http import HTTPRequest, default_context
from service.engine.persisted import Lookup, PersistedError, PersistedOperations
from service.protocols.codes import CloseCode, ErrorCode
from service.protocols.http import HTTPError, persisted_document_id
from service.protocols.negotiate import make_connection
from service.protocols.ws_machine import NEXT_TAIL
from service.protocols.ws_messages import (
    TRANSPORT_WS_SUBPROTOCOL,
    Action,
    Close,
    Init,
    Send,
    Start,
    Stop,
)
from service.settings import Settings

log = logging.getLogger("service.websocket")


class Gate:
    """An ``asyncio.Event`` for one connection's "can write" flag, without the Event's waiter
    deque (760 bytes per connection, by the 10,000 idle ones): open at first; waiters are made
    only while it is shut."""

    __slots__ = ("_waiters", "open")

    def __init__(self) -> None:
        #: ``is_set()``, as an attribute for the hot path.
        self.open = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self.open

    def set(self) -> None:
        self.open = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self.open = False

    async def wait(self) -> None:
        while not self.open:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)


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

    ``strict_ordering`` (``WS_STRICT_ORDERING``): each connection runs its operations one at a
    time, in arrival order (each waits until the one before it has answered, or for a
    subscription, has started), as DjangoChannelsGraphqlWs's ``strict_ordering`` does. Off by
    default: operations of one connection run concurrently.
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
        strict_ordering: bool | None = None,
        persisted: PersistedOperations | None = None,
    ) -> None:
        self.engine = engine
        #: APQ and trusted documents for ``subscribe``/``start`` payloads (as over HTTP).
        self.persisted = persisted
        self.settings = settings
        self.get_context = get_context
        self.authenticate = authenticate
        self.on_connect = on_connect
        self.log_operation = log_operation
        self.recorder = engine.recorder
        self.strict_ordering = (
            settings.ws_strict_ordering if strict_ordering is None else strict_ordering
        )

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
            context = default_context(request)
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
    """One GraphQL WebSocket connection over any transport.

    ``request`` is the upgrade request (its ``request_id`` already assigned by the transport);
    ``send_text``/``close`` write to the transport; ``send_result(head, result)`` (optional)
    writes the text message ``head + result + NEXT_TAIL`` given as UTF-8 parts (a subscription
    result encoded once and shared: a transport may reuse the frame it made for the same parts),
    else ``send_text`` gets it joined and decoded; ``loop`` (default: the running loop) gives
    the clock, the timers and the tasks. ``keepalive``: send the subprotocol's own keep-alive
    messages (``ka`` on ``graphql-ws``, ``ping`` on ``graphql-transport-ws``) every
    ``WS_KEEPALIVE_S``; ``None`` decides by the settings (``ka`` always, ``ping`` only with
    ``WS_TRANSPORT_PING``), which suits a transport that sends WebSocket ping frames itself.
    """

    def __init__(
        self,
        app: ConnectApp,
        subprotocol: str,
        request: HTTPRequest,
        send_text: Callable[[str], None],
        close: Callable[[int, str], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        keepalive: bool | None = None,
        send_result: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        s = app.settings
        self.app = app
        self.engine = app.engine
        self.recorder = app.recorder
        self.settings = s
        self.subprotocol = subprotocol
        self.request = request
        self._send_text = send_text
        self._send_result = send_result or (
            lambda head, result: send_text((head + result + NEXT_TAIL).decode())
        )
        self._close = close
        self.loop = loop or asyncio.get_running_loop()
        keepalive_s = s.ws_keepalive_s if s.ws_keepalive_s > 0 else None
        if keepalive is None:
            keepalive = subprotocol != TRANSPORT_WS_SUBPROTOCOL or s.ws_transport_ping
        self.machine = make_connection(
            subprotocol,
            now=self.loop.time(),
            init_timeout_s=s.ws_init_timeout_s,
            keepalive_s=keepalive_s if keepalive else None,
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
        self.writable = Gate()
        self.strict: asyncio.Lock | None = None
        self.closed = False
        self.recorder.websocket(subprotocol, 1)
        self._schedule()

    # --- input ---------------------------------------------------------------------------------
    def receive_text(self, text: str) -> None:
        self.apply(self.machine.receive_text(text, self.loop.time()))

    def receive_bytes(self, data: bytes) -> None:
        self.apply(self.machine.receive_bytes(data, self.loop.time()))

    def shutdown(self, reason: str | None = None, code: int = CloseCode.GoingAway) -> None:
        """The server closes the connection: ``code`` 1001 (going away) by default, 1012
        (service restart) on a reload; operations are cancelled."""
        if reason is None:
            reason = (
                "server restarting" if code == CloseCode.ServiceRestart else "server shutting down"
            )
        self.apply(self.machine.close(code, reason))

    def connection_lost(self) -> None:
        """The transport is gone, however it went (close frame, reset, EOF, shutdown): cancel
        every task and timer and release the gauges. The cancelled operations unwind on the
        loop (their subscriptions leave their groups and run ``unsubscribed``); ``pending()``
        lists what has not finished yet."""
        if self.closed:
            return
        self.closed = True
        for timer in (self.timer, self.expiry):
            if timer is not None:
                timer.cancel()
        for task in list(self.tasks.values()) + list(self.background):
            task.cancel()
        self.recorder.websocket(self.subprotocol, -1)

    def pending(self) -> list[asyncio.Future[Any]]:
        """The session's operation and background tasks that have not finished."""
        return [task for task in (*self.owned, *self.background) if not task.done()]

    async def wait_closed(self, timeout_s: float = 5.0) -> None:
        """After ``connection_lost``: wait (at most ``timeout_s``) for every task to unwind."""
        pending = self.pending()
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

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
            self.apply(self.machine.close(CloseCode.InternalServerError, "Internal server error"))
            return
        self.context = context
        if self.app.strict_ordering:
            self.strict = asyncio.Lock()
        self._watch_expiry(context)
        self.apply(self.machine.accept(ack, self.loop.time()))

    def _watch_expiry(self, context: Any) -> None:
        user = context.get("user") if isinstance(context, dict) else None
        if not isinstance(user, dict):
            return
        remaining = seconds_until_expiry(user, time.time())
        if remaining is not None:
            # Tokens are accepted with JWT_LEEWAY_S of clock skew; close when that runs out.
            delay = max(0.0, remaining + self.settings.jwt_leeway_s)
            self.expiry = self.loop.call_later(delay, self._expired)

    def _expired(self) -> None:
        self.expiry = None
        self.apply(self.machine.close(CloseCode.Forbidden, "Forbidden: token expired"))

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
        self.recorder.request("ws", kind, status)
        logger = self.app.log_operation
        if logger is not None:
            logger(
                request_id=f"{self.request.request_id}:{op_id}",
                subprotocol=self.subprotocol,
                op_id=op_id,
                operation_type=kind,
                operation_name=name,
                status=status,
                duration_s=time.perf_counter() - t0,
                user=user_sub(self.context),
            )

    async def _operation(self, op_id: str, payload: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        name = payload.get("operationName")
        kind = "unknown"
        status = "cancelled"
        try:
            if not self.writable.is_set():
                # The client is not reading: start nothing that would add to its backlog.
                await self.writable.wait()
            self.recorder.inflight(1)
            try:
                if self.strict is not None:
                    async with self.strict:
                        kind, status, stream = await self._setup(op_id, payload)
                else:
                    kind, status, stream = await self._setup(op_id, payload)
            finally:
                self.recorder.inflight(-1)
            # Queries and mutations: their whole time; subscriptions: the time to set up.
            self.recorder.duration(kind, name, time.perf_counter() - t0)
            if stream is not None:
                task = asyncio.current_task()
                if self.closed or (task is not None and task.cancelling()):
                    # The connection ended while the subscription was starting. Code below us
                    # (a broker's network I/O) can swallow the cancellation meant for this task,
                    # so the session's own state decides: close the stream (it leaves its groups
                    # and runs `unsubscribed`) instead of waiting for events nobody will read.
                    await _close_stream(stream)
                    raise asyncio.CancelledError
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
        query = payload["query"]
        register = None
        persisted = self.app.persisted
        if (
            query is None
            or "documentId" in payload
            or (persisted is not None and persisted.trusted_only)
            or (payload["extensions"] is not None and "persistedQuery" in payload["extensions"])
        ):
            try:
                query, register = await self._persisted_query(payload)
            except (HTTPError, PersistedError) as exc:
                self.apply(self.machine.error(op_id, [codes.error(exc.message, exc.code)]))
                return "unknown", "rejected", None
        prepared = engine.prepare(query, name)
        if not isinstance(prepared, tuple):
            prepared = await prepared
        cached, kind, failure = prepared
        if failure is not None:
            self.apply(self.machine.error(op_id, failure.body["errors"]))
            return kind, "rejected", None
        assert cached is not None
        if register is not None and persisted is not None:
            await persisted.register(register, query)
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

    async def _persisted_query(self, payload: dict[str, Any]) -> tuple[str, str | None]:
        """The document a payload names (APQ, trusted documents) and the id to register it
        under; raises ``HTTPError`` or ``PersistedError`` as the HTTP core would answer them."""
        document_id = persisted_document_id(payload.get("documentId"), payload["extensions"])
        query = payload["query"] or ""
        persisted = self.app.persisted
        if persisted is None:
            if document_id is not None and not query:
                raise HTTPError(
                    400,
                    "Persisted queries are not supported.",
                    code=ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
                )
            return query, None
        if not persisted.applies(document_id):
            return query, None
        lookup = persisted.resolve(query, document_id)
        if not isinstance(lookup, Lookup):
            lookup = await lookup
        return lookup.query, lookup.register

    def _deliver_final(self, op_id: str, outcome: Outcome) -> str:
        if outcome.request_error:
            self.apply(self.machine.error(op_id, outcome.body["errors"]))
            return "rejected"
        self.apply(self.machine.next(op_id, outcome.body))
        self.apply(self.machine.complete(op_id))
        return "error" if outcome.body.get("errors") else "ok"

    def _deliver_next(self, op_id: str, outcome: Outcome) -> bool:
        """Direct delivery (``ResponseStream.set_deliver``): write ``next`` for ``outcome`` now,
        from the broker's dispatch pass; ``False`` when the client is not reading (the outcome
        is then queued for ``_pump``)."""
        if self.closed:
            return True
        if not self.writable.open:
            return False
        head = self.machine.next_head(op_id)
        if head is not None:
            self._send_result(head, outcome.encoded_bytes or outcome.json_bytes())
            sent_at = outcome.sent_at
            self.recorder.notification_sent(None if sent_at is None else time.time() - sent_at)
        return True

    def _send_next(self, op_id: str, outcome: Outcome) -> None:
        # Encoded once per outcome: subscribers sharing an execution share its JSON bytes.
        head = self.machine.next_head(op_id)
        if head is not None:
            self._send_result(head, outcome.json_bytes())
            sent_at = outcome.sent_at
            self.recorder.notification_sent(None if sent_at is None else time.time() - sent_at)

    async def _pump(self, op_id: str, stream: Any) -> str:
        set_deliver = getattr(stream, "set_deliver", None)
        if set_deliver is not None:
            set_deliver(functools.partial(self._deliver_next, op_id))
        try:
            try:
                async for outcome in stream:
                    if not self.writable.is_set():
                        await self.writable.wait()
                    if not self.closed:
                        self._send_next(op_id, outcome)
                    # A queued backlog never suspends __anext__: yield so other subscribers,
                    # the heartbeat and new connections get the loop between notifications.
                    await asyncio.sleep(0)
            except GraphQLError as exc:
                # The source stream failed mid-way with a GraphQL error: report it and end.
                self.apply(self.machine.error(op_id, [exc.formatted]))  # type: ignore[list-item]
                return "error"
        finally:
            if set_deliver is not None:
                set_deliver(None)
            await _close_stream(stream)
        self.apply(self.machine.complete(op_id))
        return "complete"


async def _close_stream(stream: Any) -> None:
    """Close a subscription's event stream; its own errors are logged, never raised."""
    try:
        await stream.aclose()
    except Exception:
        log.exception("closing a subscription stream failed")
