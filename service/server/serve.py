"""``serve()``: run a graphene schema on TCP and unix sockets with the native transport.

``serve(schema, listen=[{"protocol": "tcp", "port": 25100}, {"protocol": "unix", "path":
"/tmp/worker0"}])`` blocks until SIGINT/SIGTERM, then drains. ``run=False`` returns a ``Server``
to ``await`` (it starts listening) and later ``await server.close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import stat
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import orjson

from service.broker import make_broker
from service.engine.errors import ExceptionHandler
from service.engine.executor import Engine
from service.engine.http import ContextGetter, HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.engine.persisted import PersistedOperations
from service.engine.recorder import NullRecorder, Recorder
from service.protocols.codes import CloseCode
from service.server.cors import CORSPolicy
from service.server.graphiql import GraphiQL
from service.server.native import DeadlineSweeper, HTTPProtocol, RequestLogger, WebSocketHandler
from service.server.ws_native import NativeWebSocket, make_websocket_handler
from service.server.ws_session import ConnectApp
from service.settings import Settings
from service.subscriptions.fanout import Fanout

ReadyCheck = Callable[[], Awaitable[bool]]

#: How often a server hands its recorder's counts to the metrics library (scrapes lag by this).
METRICS_FLUSH_INTERVAL_S = 1.0

log = logging.getLogger("service.server")

_JSON = [("content-type", "application/json")]


class ServiceApp:
    """Routes ``/healthz`` and ``/readyz``; everything else goes to the GraphQL core, after
    ``graphiql`` (browsers' page and assets, ``service.server.graphiql``) and inside ``cors``
    (``service.server.cors``) when they are given."""

    def __init__(
        self,
        core: HTTPCore,
        ready_check: ReadyCheck | None = None,
        identity: Mapping[str, Any] | None = None,
        *,
        graphiql: GraphiQL | None = None,
        cors: CORSPolicy | None = None,
    ) -> None:
        self.core = core
        self.ready_check = ready_check
        self.draining = False
        self.health = orjson.dumps({"status": "ok", "pid": os.getpid(), **(identity or {})})
        self.graphiql = graphiql
        self.cors = cors

    def handle(self, request: HTTPRequest) -> HTTPResponse | Awaitable[HTTPResponse]:
        path = request.path
        if path == "/healthz":
            return HTTPResponse(200, list(_JSON), self.health)
        if path == "/readyz":
            return self._ready()
        if self.cors is not None:
            return self.cors.handle(request, self._route)
        return self._route(request)

    def _route(self, request: HTTPRequest) -> HTTPResponse | Awaitable[HTTPResponse]:
        if self.graphiql is not None:
            page = self.graphiql.handle(request)
            if page is not None:
                return page
        return self.core.handle(request)

    async def _ready(self) -> HTTPResponse:
        if self.draining:
            return HTTPResponse(503, list(_JSON), b'{"status":"draining"}')
        if self.ready_check is None:
            return HTTPResponse(200, list(_JSON), b'{"status":"ready"}')
        try:
            ok = await asyncio.wait_for(self.ready_check(), 5.0)
        except Exception:
            ok = False
        if ok:
            return HTTPResponse(200, list(_JSON), b'{"status":"ready"}')
        return HTTPResponse(
            503,
            list(_JSON),
            orjson.dumps({"status": "unavailable", "reason": "database unreachable"}),
        )


def _check_listen(listen: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for spec in listen:
        if not isinstance(spec, Mapping):
            raise ValueError(f"listen entries must be dicts, got {spec!r}")
        protocol = spec.get("protocol")
        if protocol == "tcp":
            port = spec.get("port")
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(
                    f"tcp listen entry needs an integer 'port' in 0..65535: {dict(spec)!r}"
                )
            if not isinstance(spec.get("reuse_port", False), bool):
                raise ValueError(f"tcp listen entry: 'reuse_port' must be a bool: {dict(spec)!r}")
        elif protocol == "unix":
            path = spec.get("path")
            if not isinstance(path, str) or not path:
                raise ValueError(f"unix listen entry needs a 'path': {dict(spec)!r}")
        else:
            raise ValueError(
                f"unsupported listen protocol {protocol!r}: use 'tcp' (port, host) or 'unix' (path)"
            )
        specs.append(dict(spec))
    if not specs:
        raise ValueError("listen is empty: give at least one {'protocol': 'tcp'|'unix', ...}")
    return specs


def _listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        return False
    else:
        return True
    finally:
        probe.close()


def bind_unix(path: str, *, atomic: bool = False, backlog: int = 1024) -> tuple[socket.socket, int]:
    """Bind and listen on unix socket ``path``, connectable by any local user (mode 0666).

    ``atomic=False``: a stale file is removed only when nothing listens on it; a live one raises
    ``OSError(EADDRINUSE)``. ``atomic=True`` (supervisor workers): bind a temporary path and
    ``rename`` it over ``path``, so the path never goes missing while a worker is replaced.
    Returns the socket and the inode now at ``path`` (to unlink only our own file later).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if atomic:
            tmp = f"{path}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            sock.bind(tmp)
            os.chmod(tmp, 0o666)
            sock.listen(backlog)
            os.rename(tmp, path)
        else:
            if os.path.lexists(path):
                if not stat.S_ISSOCK(os.lstat(path).st_mode):
                    raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
                if _listening(path):
                    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")
                os.unlink(path)
            sock.bind(path)
            os.chmod(path, 0o666)
            sock.listen(backlog)
        sock.setblocking(False)
        return sock, os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise


class ConnectionSet(set[Any]):
    """The open connections of a server; ``empty`` is set whenever the last one goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.empty = asyncio.Event()
        self.empty.set()
        self.changed = asyncio.Event()  # set whenever one goes away

    def add(self, item: Any) -> None:
        super().add(item)
        self.empty.clear()

    def discard(self, item: object) -> None:
        super().discard(item)
        self.changed.set()
        if not self:
            self.empty.set()


class Server:
    """Listening sockets, the connections they accepted, and what those connections use.

    A reader sees here what a worker is made of: the request ``handler`` (health routes plus
    the GraphQL-over-HTTP core), the ``engine`` they run, the WebSocket upgrade hook, the
    subscription ``fanout`` (started before listening, closed after the connections), the
    ``recorder`` of metrics, the request ``ids``, and, once started, the deadline ``sweeper``
    on the server's loop.
    """

    def __init__(
        self,
        handler: ServiceApp,
        settings: Settings,
        listen: Sequence[Mapping[str, Any]],
        *,
        engine: Engine,
        fanout: Fanout,
        recorder: Recorder | None = None,
        websocket: WebSocketHandler | None = None,
        log_request: RequestLogger | None = None,
        atomic_unix: bool = False,
        on_start: Sequence[Callable[[], Awaitable[None]]] = (),
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.listen = _check_listen(listen)
        self.engine = engine
        self.fanout = fanout
        self.recorder: Recorder = recorder or NullRecorder()
        self.ids = RequestIds()
        self.websocket = websocket
        self.log_request = log_request
        self.atomic_unix = atomic_unix
        self.on_start = list(on_start)
        self.on_close = list(on_close)
        self.servers: list[asyncio.AbstractServer] = []
        self.connections = ConnectionSet()
        self.unix_paths: list[tuple[str, int]] = []
        self.sweeper: DeadlineSweeper | None = None
        self.flusher: asyncio.TimerHandle | None = None
        self.closed = False

    def _factory(self) -> HTTPProtocol:
        assert self.sweeper is not None
        return HTTPProtocol(
            self.handler,
            self.settings,
            self.connections,
            self.sweeper,
            self.ids,
            websocket=self.websocket,
            log_request=self.log_request,
        )

    @property
    def sockets(self) -> list[socket.socket]:
        return [s for server in self.servers for s in server.sockets]  # type: ignore[attr-defined]

    def tcp_port(self) -> int:
        """The first TCP listener's port (useful with ``port=0``)."""
        for sock in self.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        raise LookupError("no TCP listener")

    async def start(self) -> Server:
        loop = asyncio.get_running_loop()
        self.sweeper = DeadlineSweeper(loop, self.settings)
        self.flusher = loop.call_later(METRICS_FLUSH_INTERVAL_S, self._flush_metrics)
        try:
            await self.fanout.start()
            for hook in self.on_start:
                await hook()
            for spec in self.listen:
                if spec["protocol"] == "tcp":
                    server = await loop.create_server(
                        self._factory,
                        host=spec.get("host", "127.0.0.1"),
                        port=spec["port"],
                        reuse_address=True,
                        reuse_port=bool(spec.get("reuse_port", False)),
                        backlog=spec.get("backlog", 1024),
                    )
                else:
                    sock, inode = bind_unix(spec["path"], atomic=self.atomic_unix)
                    self.unix_paths.append((spec["path"], inode))
                    server = await loop.create_server(self._factory, sock=sock)
                self.servers.append(server)
        except BaseException:
            await self.close(0)
            raise
        return self

    def __await__(self) -> Any:
        return self.start().__await__()

    def _flush_metrics(self) -> None:
        """Hand the recorder's counts to the metrics library, every second while running."""
        self.recorder.flush()
        if not self.closed:
            loop = asyncio.get_running_loop()
            self.flusher = loop.call_later(METRICS_FLUSH_INTERVAL_S, self._flush_metrics)

    async def _websockets_gone(self, websockets: list[Any]) -> None:
        """Return once every one of ``websockets`` has closed (their clients left)."""
        while any(ws.transport is not None for ws in websockets):
            self.connections.changed.clear()
            await self.connections.changed.wait()

    def stop_accepting(self) -> None:
        """Close the listeners and remove our own unix socket files (not a successor's)."""
        for server in self.servers:
            server.close()
        for path, inode in self.unix_paths:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
        self.unix_paths.clear()

    async def close(
        self,
        timeout_s: float | None = None,
        *,
        websocket_drain_s: float = 0.0,
        websocket_spread_s: float = 0.0,
        websocket_code: int = CloseCode.GoingAway,
        idle_linger_s: float = 0.0,
    ) -> None:
        """Stop accepting, let in-flight work finish within ``timeout_s`` (default: the
        graceful timeout), then close what is left and run the ``on_close`` hooks.

        HTTP connections close once their response in progress is sent; idle keep-alive ones
        at once, or, with ``idle_linger_s``, when no request came for that many seconds (one
        that comes is answered, with ``connection: close``: ``HTTPProtocol.shutdown``).
        WebSockets keep running (subscriptions keep delivering) for ``websocket_drain_s``
        seconds, then are closed with ``websocket_code`` (1001 Going Away on a stop; the
        supervisor's reload uses 1012 Service Restart), spread evenly over
        ``websocket_spread_s`` seconds so their clients do not all reconnect at the same
        moment. Whatever is still open at the end of ``timeout_s`` is aborted.
        """
        if self.closed:
            return
        self.closed = True
        self.handler.draining = True
        self.stop_accepting()
        loop = asyncio.get_running_loop()
        grace = self.settings.graceful_timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + grace
        owned: set[asyncio.Future[Any]] = set()
        websockets: list[Any] = []
        for conn in list(self.connections):
            owned.update(conn.pending_tasks())
            if isinstance(conn, NativeWebSocket):
                websockets.append(conn)
            else:
                conn.shutdown(min(idle_linger_s, grace))
        drain = min(websocket_drain_s, grace)
        if websockets and drain > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._websockets_gone(websockets), drain)
        open_ws = [ws for ws in websockets if ws.transport is not None]
        spread = max(0.0, min(websocket_spread_s, deadline - loop.time() - 1.0))
        for i, ws in enumerate(open_ws):
            delay = spread * i / len(open_ws) if spread > 0 else 0.0
            if delay > 0:
                loop.call_later(delay, ws.shutdown, websocket_code)
            else:
                ws.shutdown(websocket_code)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connections.empty.wait(), max(0.0, deadline - loop.time()))
        for conn in list(self.connections):
            owned.update(conn.pending_tasks())
            if conn.transport is not None:
                conn.transport.abort()
        leftovers = [task for task in owned if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            # Aborted connections cancel their tasks; give them a bounded moment to unwind
            # (close subscription streams, leave broker groups) before the broker goes.
            await asyncio.wait(leftovers, timeout=2.0)
        for server in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self.sweeper is not None:
            self.sweeper.close()
        self.engine.close()
        await self.fanout.close()
        if self.flusher is not None:
            self.flusher.cancel()
        self.recorder.flush()
        for hook in self.on_close:
            try:
                await hook()
            except Exception:
                log.exception("on_close hook failed")


def build_server(
    schema: Any,
    listen: Sequence[Mapping[str, Any]],
    *,
    settings: Settings | None = None,
    get_context: ContextGetter | None = None,
    exception_handler: ExceptionHandler | None = None,
    middleware: Sequence[Any] | None = None,
    ready_check: ReadyCheck | None = None,
    on_connect: Any = None,
    atomic_unix: bool = False,
    log_request: RequestLogger | None = None,
    on_start: Sequence[Callable[[], Awaitable[None]]] = (),
    on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    identity: Mapping[str, Any] | None = None,
    authenticate: Callable[[Any, Any], Any] | None = None,
    log_operation: Callable[..., None] | None = None,
    recorder: Recorder | None = None,
    path: str = "/graphql",
    persisted: PersistedOperations | None = None,
) -> Server:
    """Wire one server: engine, HTTP core, WebSocket endpoint, fanout, listeners. Nothing is
    bound until ``await server.start()``.

    ``persisted``: APQ and trusted documents, over HTTP and WebSocket (``None``: a request
    naming a document by id alone gets ``PERSISTED_QUERY_NOT_SUPPORTED``); its trusted
    documents are validated and preloaded here (``ValueError`` names a bad one).

    ``recorder`` receives the metrics (default: prometheus-client's, ``PrometheusRecorder``);
    ``path`` is where GraphQL is served, over HTTP and WebSocket. ``on_start`` hooks run once
    the fanout is started, before listening; ``on_close`` hooks after the connections ended.
    """
    settings = settings or Settings.from_env()
    if recorder is None:
        from service.observability.metrics import PrometheusRecorder

        recorder = PrometheusRecorder(settings.metrics_operation_names)
    engine = Engine(
        schema,
        settings,
        middleware=middleware,
        exception_handler=exception_handler,
        recorder=recorder,
    )
    if persisted is not None:
        persisted.preload(engine.cache)
    core = HTTPCore(engine, get_context=get_context, path=path, persisted=persisted, streams=True)
    connect = ConnectApp(
        engine,
        settings,
        get_context=get_context,
        authenticate=authenticate,
        on_connect=on_connect,
        log_operation=log_operation,
        persisted=persisted,
    )
    fanout = Fanout(
        make_broker(settings.redis_url or None, on_reconnect=recorder.broker_reconnected),
        queue_limit=settings.notification_queue_limit,
        recorder=recorder,
    )
    return Server(
        ServiceApp(
            core,
            ready_check,
            identity,
            graphiql=GraphiQL(path) if settings.graphiql else None,
            cors=CORSPolicy.from_settings(settings, path),
        ),
        settings,
        listen,
        engine=engine,
        fanout=fanout,
        recorder=recorder,
        websocket=make_websocket_handler(connect, path),
        log_request=log_request,
        atomic_unix=atomic_unix,
        on_start=on_start,
        on_close=on_close,
    )


@overload
def serve(
    schema: Any,
    listen: Sequence[Mapping[str, Any]],
    get_context: ContextGetter | None = ...,
    exception_handler: ExceptionHandler | None = ...,
    enable_uvloop: bool = ...,
    *,
    run: Literal[False],
    **options: Any,
) -> Server: ...


@overload
def serve(
    schema: Any,
    listen: Sequence[Mapping[str, Any]],
    get_context: ContextGetter | None = ...,
    exception_handler: ExceptionHandler | None = ...,
    enable_uvloop: bool = ...,
    run: Literal[True] = ...,
    **options: Any,
) -> None: ...


def serve(
    schema: Any,
    listen: Sequence[Mapping[str, Any]],
    get_context: ContextGetter | None = None,
    exception_handler: ExceptionHandler | None = None,
    enable_uvloop: bool = True,
    run: bool = True,
    **options: Any,
) -> Server | None:
    """Serve ``schema`` (graphene ``Schema`` or ``GraphQLSchema``) on every ``listen`` entry.

    ``listen``: ``[{"protocol": "tcp", "port": int, "host"?: str = "127.0.0.1",
    "reuse_port"?: bool = False}, {"protocol": "unix", "path": str}]``; anything else raises
    ``ValueError``. ``reuse_port`` sets ``SO_REUSEPORT``: several processes serving the same
    port, the kernel spreading connections across them.
    ``get_context(request: HTTPRequest)`` may be sync or async; ``request`` carries ``remote``,
    ``headers`` and the rest. ``exception_handler(exc, context)`` sees every masked exception.
    Extra keyword ``options`` are ``build_server``'s: ``settings``, ``middleware``,
    ``ready_check``, ``on_connect``, ``recorder``, ``path``, ...

    ``run=True`` blocks (uvloop when ``enable_uvloop``) until SIGINT or SIGTERM, then drains for
    ``settings.graceful_timeout_s``. ``run=False`` returns the ``Server`` unstarted:
    ``server = await serve(..., run=False)`` binds, ``await server.close()`` stops.
    """
    server = build_server(
        schema, listen, get_context=get_context, exception_handler=exception_handler, **options
    )
    if not run:
        return server

    async def main() -> None:
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    if enable_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
    return None
