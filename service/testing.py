"""An in-process client for testing a schema: the workers' HTTP core and WebSocket session code,
with no sockets, no gunicorn and no nginx.

```python
from service.testing import TestClient

async def test_countdown() -> None:
    async with TestClient(schema) as client:
        response = await client.query("{ hello }")
        assert response.status == 200 and response.data == {"hello": "Hello, world!"}
        values = [p["data"]["countdown"] async for p in client.subscribe(
            "subscription { countdown(from: 2) }")]
        assert values == [2, 1, 0]
```

- ``query()`` builds an ``HTTPRequest`` (POST ``application/json`` by default, request id from
  ``RequestIds`` as the transport assigns it) and hands it to the same ``ServiceApp`` and
  ``HTTPCore`` the workers run; the ``Response`` has the status, headers and body.
- ``subscribe()`` drives the workers' ``WSSession`` (either subprotocol) through in-memory
  ``send_text``/``close`` callbacks: ``connection_init`` (with ``connection_params``), then the
  operation. The stream yields each ``next`` payload and ends when the server completes the
  operation; an ``error`` message raises ``SubscriptionError``, a refused connection
  ``ConnectionRefused``, a socket the server closes ``ConnectionClosedByServer``.
- The client is an async context manager that starts a subscription ``Fanout`` on the running
  loop (a ``MemoryBroker`` by default, Redis with ``broker="redis"`` and ``settings.redis_url``,
  or any ``Broker``), so ``await SomeSubscription.broadcast(group, payload)`` in a test or in a
  resolver reaches the client's subscribers, exactly as in a worker. When a server already has
  a fanout on this loop, the client uses that one.
- Entering a subscription (``async with client.subscribe(...) as sub``, or ``await sub.start()``)
  returns once the server has started it, i.e. joined its groups: a broadcast right after is
  delivered. (The client turns ``CONFIRM_SUBSCRIPTIONS`` on for its WebSocket sessions to know
  that moment and hides the ``{"data": null}`` confirmation unless your settings asked for it.)
- ``await sub.assert_no_messages(timeout_s=0.2)`` fails if anything arrives within the window.

Defaults mirror the workers: the context is ``{"request", "request_id", "settings", "user"}``
(plus ``"db"`` when ``database`` is given), ``user`` verified from ``Authorization: Bearer``
over HTTP and from the ``connection_init`` payload over WebSocket. Settings default to
``Settings()`` (not the environment); ``client.token("alice")`` signs a token for
``settings.jwt_secret``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from service.auth import issue_token
from service.broker import Broker, MemoryBroker, RedisBroker
from service.engine.errors import ExceptionHandler
from service.engine.executor import Engine
from service.engine.http import ContextGetter, HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.engine.recorder import NullRecorder, Recorder
from service.server.application import make_context_getter, make_ws_authenticator
from service.server.cors import CORSPolicy
from service.server.graphiql import GraphiQL
from service.server.serve import ServiceApp
from service.server.ws_session import ConnectApp, WSSession
from service.settings import Settings
from service.subscriptions import Fanout

__all__ = [
    "ConnectionClosedByServer",
    "ConnectionRefused",
    "Response",
    "SubscriptionError",
    "SubscriptionStream",
    "TestClient",
]

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
_CONFIRMATION = {"data": None}


@dataclasses.dataclass(frozen=True)
class Response:
    """An HTTP answer: ``headers`` has lower-case names (repeated ones joined with ``", "``)."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    @property
    def data(self) -> Any:
        return self.json.get("data")

    @property
    def errors(self) -> list[dict[str, Any]] | None:
        errors: list[dict[str, Any]] | None = self.json.get("errors")
        return errors


class SubscriptionError(Exception):
    """The server answered the operation with an ``error`` message; ``errors`` is its payload."""

    def __init__(self, errors: Any) -> None:
        super().__init__(errors)
        self.errors = errors


class ConnectionRefused(Exception):
    """The server refused ``connection_init`` (``code``/``reason`` of its close, or the
    ``connection_error`` payload on ``graphql-ws``)."""

    def __init__(self, code: int | None, reason: Any) -> None:
        super().__init__(f"connection refused: {code} {reason}")
        self.code = code
        self.reason = reason


class ConnectionClosedByServer(Exception):
    """The server closed the socket before the operation completed (e.g. 4403 token expired)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed by the server: {code} {reason}")
        self.code = code
        self.reason = reason


class _End:
    """Queue marker: the server completed the operation."""


_END = _End()


class SubscriptionStream:
    """One WebSocket connection running one operation; see the module docstring."""

    def __init__(
        self,
        client: TestClient,
        document: str,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
        subprotocol: str,
        connection_params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        if subprotocol not in (TRANSPORT_WS, LEGACY_WS):
            raise ValueError(f"subprotocol must be {TRANSPORT_WS!r} or {LEGACY_WS!r}")
        self.client = client
        self.subprotocol = subprotocol
        self.payload: dict[str, Any] = {"query": document}
        if variables is not None:
            self.payload["variables"] = dict(variables)
        if operation_name is not None:
            self.payload["operationName"] = operation_name
        self.connection_params = dict(connection_params or {})
        self.headers = {k.lower(): v for k, v in (headers or {}).items()}
        self.headers.setdefault("sec-websocket-protocol", subprotocol)
        self.session: WSSession | None = None
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.acked = asyncio.Event()
        self.refusal: ConnectionRefused | None = None
        self.closed_with: tuple[int, str] | None = None
        self.done = False
        self.stopped = False
        self._started = False
        self._start_lock = asyncio.Lock()

    # --- the transport side (what ws_native/asgi do for a real socket) -------------------------
    def _send_text(self, text: str) -> None:
        message = json.loads(text)
        kind = message.get("type")
        if kind == "connection_ack":
            self.acked.set()
        elif kind == "ping":
            self._send({"type": "pong"})
        elif kind == "connection_error":
            self.refusal = ConnectionRefused(None, message.get("payload"))
            self.acked.set()
        elif self.stopped:
            return  # the client stopped the operation: what still comes for it is not news
        elif kind in ("next", "data"):
            self.messages.put_nowait(message.get("payload"))
        elif kind == "error":
            self.messages.put_nowait(SubscriptionError(message.get("payload")))
        elif kind == "complete":
            self.messages.put_nowait(_END)
        # "ka" and "pong": keep-alive only.

    def _close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        if not self.acked.is_set():
            self.refusal = self.refusal or ConnectionRefused(code, reason)
            self.acked.set()
        self.messages.put_nowait(ConnectionClosedByServer(code, reason))
        session = self.session
        if session is not None:
            # The transport goes away after the close frame, as a socket would.
            asyncio.get_running_loop().call_soon(session.connection_lost)

    def _send(self, message: dict[str, Any]) -> None:
        if self.session is not None and not self.session.closed:
            self.session.receive_text(json.dumps(message))

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> SubscriptionStream:
        """Connect, initialise and start the operation; returns once the server started it (a
        subscription has joined its groups) or answered it."""
        async with self._start_lock:
            if self._started:
                return self
            self._started = True
            client = self.client
            await client.start()
            request = HTTPRequest("GET", client.path, "", dict(self.headers), b"", "testclient")
            request.request_id = client.ids.for_headers(request.headers)
            self.session = WSSession(
                client.connect_app, self.subprotocol, request, self._send_text, self._close
            )
            client._streams.add(self)
            self._send({"type": "connection_init", "payload": self.connection_params})
            await asyncio.wait_for(self.acked.wait(), client.timeout_s)
            if self.refusal is not None:
                await self.close()
                raise self.refusal
            start = "subscribe" if self.subprotocol == TRANSPORT_WS else "start"
            self._send({"id": "1", "type": start, "payload": self.payload})
            first = await self._get(client.timeout_s)
            if first == _CONFIRMATION and not client.settings.confirm_subscriptions:
                return self  # the subscription is live; the confirmation is the client's own
            self._put_back(first)
            return self

    def _put_back(self, item: Any) -> None:
        rest = []
        while not self.messages.empty():
            rest.append(self.messages.get_nowait())
        for element in (item, *rest):
            self.messages.put_nowait(element)

    async def _get(self, timeout_s: float) -> Any:
        return await asyncio.wait_for(self.messages.get(), timeout_s)

    async def next(self, timeout_s: float | None = None) -> Any:
        """The next ``next`` payload; ``StopAsyncIteration`` once the server completed the
        operation; ``SubscriptionError`` for an ``error`` message; ``TimeoutError`` when none
        arrives within ``timeout_s`` (default: the client's ``timeout_s``)."""
        await self.start()
        if self.done:
            raise StopAsyncIteration
        item = await self._get(self.client.timeout_s if timeout_s is None else timeout_s)
        if item is _END:
            self.done = True
            raise StopAsyncIteration
        if isinstance(item, SubscriptionError | ConnectionClosedByServer):
            self.done = True
            raise item
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self.next()

    async def assert_no_messages(self, timeout_s: float = 0.2) -> None:
        """Fail if the server sends anything for this operation within ``timeout_s``."""
        await self.start()
        if self.messages.empty():
            try:
                item = await self._get(timeout_s)
            except TimeoutError:
                return
        else:
            item = self.messages.get_nowait()
        self._put_back(item)
        shown = "complete" if item is _END else repr(item)
        raise AssertionError(f"expected no message within {timeout_s:g} s, got {shown}")

    async def complete(self) -> None:
        """The client stops the operation (``complete`` / ``stop``); anything the server still
        sends for it (``graphql-ws`` answers ``stop`` with ``complete``) is dropped."""
        if self.session is not None and not self.done:
            stop = "complete" if self.subprotocol == TRANSPORT_WS else "stop"
            self.stopped = self.done = True
            self._send({"id": "1", "type": stop})

    async def close(self) -> None:
        """The client goes away: the session ends its operations, which unwind (leave their
        groups, run ``unsubscribed``) before this returns."""
        session = self.session
        self.done = True
        self.client._streams.discard(self)
        if session is None:
            return
        session.connection_lost()
        await session.wait_closed(self.client.timeout_s)

    async def __aenter__(self) -> SubscriptionStream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class TestClient:
    """A schema served in-process; see the module docstring."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        schema: Any,
        settings: Settings | None = None,
        get_context: ContextGetter | None = None,
        *,
        authenticate: Any = None,
        on_connect: Any = None,
        middleware: Sequence[Any] | None = None,
        exception_handler: ExceptionHandler | None = None,
        database: Any = None,
        broker: Literal["memory", "redis"] | Broker = "memory",
        recorder: Recorder | None = None,
        path: str = "/graphql",
        timeout_s: float = 10.0,
        on_start: Sequence[Callable[[], Awaitable[None]]] = (),
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.settings = settings = settings if settings is not None else Settings()
        self.on_start = list(on_start)
        self.on_close = list(on_close)
        self.path = path
        self.timeout_s = timeout_s
        recorder = recorder or NullRecorder()
        self.engine = Engine(
            schema,
            settings,
            middleware=middleware,
            exception_handler=exception_handler,
            recorder=recorder,
        )
        if get_context is None:
            get_context = make_context_getter(settings, database)
        self.core = HTTPCore(self.engine, get_context=get_context, path=path)
        self.app = ServiceApp(
            self.core,
            graphiql=GraphiQL(path) if settings.graphiql else None,
            cors=CORSPolicy.from_settings(settings, path),
        )
        self.connect_app = ConnectApp(
            self.engine,
            dataclasses.replace(settings, confirm_subscriptions=True),
            get_context=get_context,
            authenticate=authenticate or make_ws_authenticator(settings),
            on_connect=on_connect,
        )
        chosen: Broker
        if broker == "memory":
            chosen = MemoryBroker()
        elif broker == "redis":
            if not settings.redis_url:
                raise ValueError("broker='redis' needs settings.redis_url")
            # A channel prefix of its own: tests sharing one Redis never see each other's events.
            prefix = f"graphql-service-test-{secrets.token_hex(4)}:"
            chosen = RedisBroker(settings.redis_url, channel_prefix=prefix)
        elif isinstance(broker, Broker):
            chosen = broker
        else:
            raise ValueError(f"broker must be 'memory', 'redis' or a Broker, not {broker!r}")
        self.fanout = Fanout(
            chosen, queue_limit=settings.notification_queue_limit, recorder=recorder
        )
        self.ids = RequestIds()
        self._streams: set[SubscriptionStream] = set()
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> TestClient:
        """Start the fanout on the running loop (``async with`` does it; so does the first
        request or subscription)."""
        if not self._started:
            self._started = True
            await self.fanout.start()
            for hook in self.on_start:
                await hook()
        return self

    async def __aenter__(self) -> TestClient:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every open subscription, run the ``on_close`` hooks, close the fanout and the
        engine."""
        for stream in list(self._streams):
            await stream.close()
        if self._started:
            for hook in self.on_close:
                await hook()
        await self.fanout.close()
        self._started = False
        self.engine.close()

    # --- HTTP ----------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str | None = None,
        *,
        query_string: str = "",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Any HTTP request, answered by the workers' ``ServiceApp``."""
        await self.start()
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        request = HTTPRequest(method, path or self.path, query_string, lowered, body, "testclient")
        request.request_id = self.ids.for_headers(lowered)
        result = self.app.handle(request)
        response: HTTPResponse = await result if inspect.isawaitable(result) else result
        merged: dict[str, str] = {}
        for name, value in response.headers:
            merged[name] = f"{merged[name]}, {value}" if name in merged else value
        return Response(response.status, merged, response.body)

    async def query(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        method: Literal["POST", "GET"] = "POST",
        extensions: Mapping[str, Any] | None = None,
    ) -> Response:
        """Run one query or mutation over GraphQL over HTTP (POST ``application/json``, or GET
        with URL parameters). ``Accept`` defaults to ``application/graphql-response+json``, so
        requests that fail validation get status 400."""
        params: dict[str, Any] = {"query": document}
        if variables is not None:
            params["variables"] = dict(variables)
        if operation_name is not None:
            params["operationName"] = operation_name
        if extensions is not None:
            params["extensions"] = dict(extensions)
        sent = {"accept": "application/graphql-response+json"}
        sent.update({k.lower(): v for k, v in (headers or {}).items()})
        if method == "GET":
            encoded = {
                k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in params.items()
            }
            return await self.request("GET", query_string=urlencode(encoded), headers=sent)
        sent.setdefault("content-type", "application/json")
        return await self.request("POST", headers=sent, body=orjson.dumps(params))

    # --- WebSocket -----------------------------------------------------------------------------
    def subscribe(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        subprotocol: str = TRANSPORT_WS,
        connection_params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SubscriptionStream:
        """One operation (usually a subscription) over its own WebSocket session. Iterate it
        (``async for payload in ...``), or enter it (``async with ... as sub``) to have it
        started before going on."""
        return SubscriptionStream(
            self, document, variables, operation_name, subprotocol, connection_params, headers
        )

    # --- helpers -------------------------------------------------------------------------------
    async def broadcast(
        self, subscription: Any, group: str | None = None, payload: Any = None
    ) -> None:
        """``await subscription.broadcast(group=group, payload=payload)`` through this client's
        fanout (what a mutation in a worker does)."""
        await subscription.broadcast(group=group, payload=payload)

    def token(self, sub: str, *, name: str | None = None, ttl_s: int = 3600) -> str:
        """A token the client's settings accept (``JWT_SECRET`` must be set)."""
        return issue_token(self.settings, sub=sub, name=name, ttl_s=ttl_s)

    def auth_headers(self, sub: str, *, name: str | None = None) -> dict[str, str]:
        """``{"Authorization": "Bearer <token>"}`` for ``sub``."""
        return {"Authorization": f"Bearer {self.token(sub, name=name)}"}
