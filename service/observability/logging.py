"""Logs: one line per event, the same renderer for structlog and the stdlib ``logging`` module.

``logs = configure_logging(settings, slot=k)`` sets up two paths that end in the same renderer
and returns a ``Logs`` object, the only handle callers need:
- ``logs.request_logger()`` and ``logs.ws_operation_logger()`` (our hot paths: the request line,
  WebSocket operation lines) are native structlog filtering loggers built from that call's
  processors; they render and write to stderr directly, without the stdlib;
- stdlib records (gunicorn, asyncio, ``logging.getLogger("service.*")``) reach a handler on the
  root logger whose ``structlog.stdlib.ProcessorFormatter`` runs the same processors, including
  the record's ``extra`` fields. ``structlog.get_logger()`` loggers use the same processors too.

The root handler and structlog's own configuration (``structlog.configure``) are process-wide
by design of the stdlib and of structlog; calling ``configure_logging`` again (a worker after
fork, now with its ``slot``) replaces both. This module keeps no state of its own: the slot is
fixed in the processors each call builds, and the pid is read per line, so a forked child that
logs through the arbiter's setup before configuring its own still shows its own pid.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger``, ``pid`` and,
in a supervised worker, ``slot``. ``log_format="json"``: one JSON object per line, exceptions as
structured tracebacks (``exception``: a list of dicts). ``log_format="console"``: structlog's
``ConsoleRenderer`` with pretty tracebacks.

Per-request fields are passed as keyword arguments, never bound in context variables, so nothing
leaks from one keep-alive request to the next. Code that does bind context variables calls
``clear_request_context()`` when its request ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import orjson
import structlog

from service.settings import Settings

if TYPE_CHECKING:  # the arbiter configures logging without importing the GraphQL engine
    from service.engine.http import HTTPRequest, HTTPResponse

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("json", "console")

RequestLogger = Callable[["HTTPRequest", "HTTPResponse", float], None]


class WSOperationLogger(Protocol):
    """Called once when a WebSocket operation ends (``status``: ``complete``, ``error`` or
    ``cancelled``)."""

    def __call__(
        self,
        *,
        request_id: str,
        subprotocol: str,
        op_id: str,
        operation_type: str,
        operation_name: str | None,
        status: str,
        duration_s: float,
        user: str | None,
    ) -> None: ...


class RepeatFilter(logging.Filter):
    """Logs a burst of identical records once per ``interval_s``, with a count.

    Records (warnings and errors) are identical when they come from the same logger, at the
    same level, with the same message text and exception type (an outage makes every request
    fail the same way: 9,000 tracebacks in 5 s otherwise). The first passes; the others within
    ``interval_s`` are counted and dropped; the first after the interval passes with
    ``repeated=<count dropped>``.
    ``clock`` is a parameter so tests can move time.
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[Any, ...], list[float]] = {}  # key -> [window start, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # floods are of warnings and errors; info lines pass as they are
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else None
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        key = (record.name, record.levelno, text, exc_type)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.interval_s:
            if seen is not None and seen[1]:
                record.repeated = int(seen[1])
            self._seen[key] = [now, 0]
            if len(self._seen) > 10_000:  # a flood of distinct messages: forget the oldest
                for old in list(self._seen)[:5_000]:
                    del self._seen[old]
            return True
        seen[1] += 1
        return False


class _Handler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installs (and replaces when called again)."""


class _AddProcess:
    """``pid`` of the process writing the line, and ``slot`` when a supervised worker set one.

    The pid is read per line (``os.getpid()``, one cheap system call) rather than fixed at
    configuration: gunicorn's workers log through the arbiter's setup between fork and their own
    ``configure_logging`` ("Booting worker ..."), and those lines must carry the worker's pid."""

    __slots__ = ("slot",)

    def __init__(self, slot: int | None) -> None:
        self.slot = slot

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict["pid"] = os.getpid()
        if self.slot is not None:
            event_dict.setdefault("slot", self.slot)
        return event_dict


class _Timestamp:
    """``timestamp``: ISO 8601 UTC with microseconds and ``Z``. Same output as structlog's
    ``TimeStamper(fmt="iso", utc=True)``, at a fraction of the cost: the date and time up to the
    second are formatted once per second (as a ``%``-template for the microseconds)."""

    __slots__ = ("second", "template")

    def __init__(self) -> None:
        self.second = -1
        self.template = ""

    def now(self) -> str:
        """The timestamp of this instant."""
        return self.at(time.time_ns())

    def at(self, time_ns: int) -> str:
        """The timestamp of ``time_ns`` (nanoseconds since the epoch, ``time.time_ns()``)."""
        second, micros = divmod(time_ns // 1000, 1_000_000)
        if second != self.second:
            self.template = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + ".%06dZ"
            self.second = second
        return self.template % micros

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        event_dict["timestamp"] = self.now()
        return event_dict


def _default_logger_name(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> Any:
    event_dict.setdefault("logger", "service")
    return event_dict


def _dumps(obj: Any, **kwargs: Any) -> str:
    """JSON via orjson; the stdlib for what orjson refuses (huge ints, circular values). A log
    call never raises for a value it cannot serialize: at worst such values become reprs."""
    default = kwargs.get("default", repr)
    try:
        return orjson.dumps(obj, default=default, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        pass
    try:
        return json.dumps(obj, default=default, skipkeys=True)
    except (TypeError, ValueError):
        return json.dumps({str(key): _plain(value) for key, value in obj.items()})


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float) else repr(value)


def _level(settings: Settings) -> int:
    level = LEVELS.get(settings.log_level.strip().lower())
    if level is None:
        raise ValueError(
            f"LOG_LEVEL must be one of {', '.join(sorted(LEVELS))}, got {settings.log_level!r}"
        )
    return level


def _renderer(settings: Settings) -> list[Any]:
    """The final processors: exception shaping plus the renderer."""
    if settings.log_format == "json":
        return [
            # Structured tracebacks without frame locals: locals may hold tokens or passwords.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(serializer=_dumps),
        ]
    if settings.log_format == "console":
        return [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, got {settings.log_format!r}")


class LineWriter:
    """JSON lines for one output, written in batches: the lines logged within
    ``FLUSH_INTERVAL_S`` (or until ``FLUSH_BYTES`` are pending) go out in one ``write(2)``
    instead of one system call each. Without a running loop a line is written at once.
    ``flush()`` writes what is pending (the worker calls it on the way out, so nothing is lost
    on a graceful stop; a ``kill -9`` loses at most the last interval's lines). A write error
    drops the lines: logging never takes a request down.

    Pending lines are copied into one buffer allocated once, not kept as objects: holding a few
    hundred line objects until each flush and then freeing them all at once made the allocator
    hand memory back to the kernel and fault it in again (measured in a worker: 1.5 page
    faults and 8 us of system time per request line).

    Lines can also wait as their values: ``deferred`` holds tuples its owner appended (the
    worker's request logger, ``Logs.request_logger``), which ``render`` (set before the first
    one) turns into lines, in order, with the entries around them: at ``render_deferred``,
    which the owner calls when ``DEFER_MAX`` entries wait (else it calls ``schedule``),
    before the next ``write`` (so lines keep their order) and at the next ``flush``. Measured in
    ``bench/hotpath.py``: request lines built in batches cost about 60% of lines built each in
    its request's own turn, where their code and data are cold (4.1 against 6.7 µs per
    ``{ hello }`` request). Through nginx, batches of 256 lines cost less than batches of 64
    (each batch starts cold); at 30,000 requests/s a batch waits about 8 ms, and
    ``FLUSH_INTERVAL_S`` bounds the wait when traffic is slow. Holding at most ``DEFER_MAX``
    small tuples keeps memory flat; a batch larger than the buffer goes out in one ``write`` of
    its own."""

    FLUSH_INTERVAL_S = 0.1
    FLUSH_BYTES = 65_536
    #: Most entries ``deferred`` holds before they are rendered.
    DEFER_MAX = 256

    __slots__ = ("buffer", "capacity", "deferred", "fd", "render", "scheduled", "stream", "used")

    def __init__(self, stream: TextIO, capacity: int | None = None) -> None:
        self.stream = stream
        try:
            self.fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None  # not a real file (a test's StringIO): write through the stream
        self.capacity = capacity or self.FLUSH_BYTES
        self.buffer = bytearray(self.capacity)
        self.used = 0  # bytes of ``buffer`` pending
        self.scheduled: asyncio.TimerHandle | None = None
        self.deferred: list[tuple[Any, ...]] = []  # entries ``render`` has not turned into lines
        self.render: Callable[[list[tuple[Any, ...]]], bytes] | None = None

    def render_deferred(self) -> None:
        """Make the lines of the entries ``deferred`` holds (it stays the same list)."""
        entries = self.deferred[:]
        self.deferred.clear()
        assert self.render is not None, "deferred entries need a render function"
        self._put(self.render(entries))

    def write(self, line: bytes) -> None:
        if self.deferred:
            self.render_deferred()
        self._put(line)

    def _put(self, line: bytes) -> None:
        used = self.used
        end = used + len(line)
        if end > self.capacity:
            self.flush()
            if len(line) > self.capacity:
                self._write(line)
                return
            used, end = 0, len(line)
        self.buffer[used:end] = line  # same length: a copy into the buffer, no reallocation
        self.used = end
        if self.scheduled is None:
            self.schedule()

    def schedule(self) -> None:
        """A flush ``FLUSH_INTERVAL_S`` from now; without a running loop, one at once."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self.scheduled = loop.call_later(self.FLUSH_INTERVAL_S, self.flush)

    def flush(self) -> None:
        if self.deferred:
            self.render_deferred()
        if self.scheduled is not None:
            self.scheduled.cancel()
            self.scheduled = None
        used = self.used
        if not used:
            return
        self.used = 0
        with memoryview(self.buffer) as view:
            self._write(view[:used])

    def _write(self, data: bytes | memoryview) -> None:
        try:
            if self.fd is None:
                self.stream.write(bytes(data).decode())
                self.stream.flush()
                return
            self.stream.flush()  # what the stdlib path buffered goes first
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except (OSError, ValueError):
            pass


class FastLines:
    """The per-request and per-operation lines of the JSON format, built with orjson in one
    step instead of through structlog's processor chain (measured: about a third of the CPU of
    a ``{ hello }`` request went to its log line). Same fields as the other lines: ``logger``,
    the line's own fields, ``event``, ``level``, ``timestamp``, ``pid`` and ``slot``."""

    __slots__ = ("pid", "slot", "timestamp", "writer")

    def __init__(self, writer: LineWriter, slot: int | None) -> None:
        self.writer = writer
        self.slot = slot
        self.pid = os.getpid()
        self.timestamp = _Timestamp()

    def emit(self, logger: str, level: str, event: str, fields: dict[str, Any]) -> None:
        timestamp = self.timestamp.now()
        self.writer.write(_line(logger, fields, event, level, timestamp, self.pid, self.slot))


def _line(
    logger: str,
    fields: dict[str, Any],
    event: str,
    level: str,
    timestamp: str,
    pid: int,
    slot: int | None,
) -> bytes:
    """A JSON line: ``logger``, the line's own ``fields``, ``event``, ``level``,
    ``timestamp``, ``pid`` and (in a supervised worker) ``slot``, in that order."""
    line: dict[str, Any] = {"logger": logger, **fields, "event": event, "level": level}
    line["timestamp"] = timestamp
    line["pid"] = pid
    if slot is not None:
        line["slot"] = slot
    return _line_bytes(line)


def _line_bytes(line: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (_dumps(line) + "\n").encode()


class _RequestLines:
    """The ``LineWriter.render`` of a worker's request lines: entries as the request logger
    defers them, ``(request_id, method, path, status, duration_s, operation_type,
    operation_name, remote, user, time_ns)``, to JSON lines (``level``: ``error`` for a 5xx).

    A line is a template, the JSON of the fields that repeat from request to request (method,
    path, status, operation type and name; the level), filled in by one ``%`` with the request id,
    ``duration_ms``, ``remote``, ``user`` and the timestamp, whose second is formatted once per
    second. Measured over batches of 64 ``{ hello }`` lines (best of 40 ``timeit`` runs):
    0.85 µs a line, against 1.35 for a dict per line through orjson; 1.05 µs a line inside
    ``bench/hotpath.py``'s requests. An entry orjson cannot encode (a lone surrogate, an int
    beyond 64 bits) or a duration outside ``[0, 1e9)`` seconds gets the general path's line,
    its stdlib fallback included (``_request_line``): the same bytes as ``FastLines.emit``
    writes either way (``tests/unit/test_request_line.py``).
    The templates, and the JSON of ``remote`` and ``user`` values, are cached; each cache is
    cleared when it reaches ``MAX`` entries: paths, operation names, addresses and users are
    the clients' to choose."""

    MAX = 1024

    __slots__ = ("pid", "second", "second_text", "slot", "tail", "templates", "timestamp", "values")

    def __init__(self, timestamp: _Timestamp, pid: int, slot: int) -> None:
        self.timestamp = timestamp
        self.pid = pid
        self.slot = slot
        self.tail = b'Z","pid":%d,"slot":%d}\n' % (pid, slot)
        self.templates: dict[tuple[Any, ...], bytes] = {}
        self.values: dict[str | None, bytes] = {}
        self.second = -1
        self.second_text = b""

    def __call__(self, entries: list[tuple[Any, ...]]) -> bytes:
        """The lines of ``entries``, joined."""
        lines: list[bytes] = []
        line = lines.append
        dumps = orjson.dumps
        templates = self.templates
        values = self.values
        last_second = self.second
        second_text = self.second_text
        for entry in entries:
            (
                request_id,
                method,
                path,
                status,
                duration_s,
                operation_type,
                operation_name,
                remote,
                user,
                time_ns,
            ) = entry
            second, micros = divmod(time_ns // 1000, 1_000_000)
            if second != last_second:
                second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
                self.second = last_second = second
                self.second_text = second_text
            key = (method, path, status, operation_type, operation_name)
            try:
                # ``duration_ms(duration_s)`` as orjson writes it: both are the decimal that
                # ``%.3f`` gives, shortest (below 1e12 ms, where no shorter decimal is as near).
                ms = duration_s * 1000.0
                if not 0.0 <= ms < 1e12:
                    raise TypeError("a duration outside the fast path's range")
                milliseconds = (b"%.3f" % ms).rstrip(b"0")
                if milliseconds[-1] == 46:  # b"." : 2.000 is 2.0
                    milliseconds += b"0"
                template = templates.get(key) or self.template(key)
                remote_json = values.get(remote) or self.value(remote)
                if user is None:
                    user_json = b""
                else:
                    user_json = b',"user":' + (values.get(user) or self.value(user))
                line(
                    template
                    % (
                        dumps(request_id),
                        milliseconds,
                        remote_json,
                        user_json,
                        second_text,
                        micros,
                    )
                )
            except TypeError:
                line(_request_line(entry, self.timestamp, self.pid, self.slot))
        return b"".join(lines)

    def template(self, key: tuple[Any, ...]) -> bytes:
        """The template of ``(method, path, status, operation_type, operation_name)``:
        bytes for ``%`` with the request id, ``duration_ms``, ``remote`` and ``user`` as JSON
        (``user`` with its key and comma, or empty), the timestamp's second and its
        microseconds. Raises ``TypeError`` for a value orjson cannot encode."""
        method, path, status, operation_type, operation_name = key
        level = _level_of(status)

        def encoded(value: Any) -> bytes:
            return orjson.dumps(value, default=repr).replace(b"%", b"%%")

        template = (
            b'{"logger":"service.request","request_id":%b,"method":'
            + encoded(method)
            + b',"path":'
            + encoded(path)
            + b',"status":'
            + encoded(status)
            + b',"duration_ms":%b,"operation_type":'
            + encoded(operation_type)
            + b',"operation_name":'
            + encoded(operation_name)
            + b',"remote":%b%b,"event":"request","level":'
            + encoded(level)
            + b',"timestamp":"%b.%06d'
            + self.tail
        )
        if len(self.templates) >= self.MAX:
            self.templates.clear()
        self.templates[key] = template
        return template

    def value(self, value: Any) -> bytes:
        """``value`` (a ``remote`` or ``user``) as JSON. Raises ``TypeError`` as orjson does."""
        encoded = orjson.dumps(value, default=repr)
        if value is None or type(value) is str:  # exactly: 1 == True, and 1 is not "1"
            if len(self.values) >= self.MAX:
                self.values.clear()
            self.values[value] = encoded
        return encoded


def _level_of(status: int) -> str:
    """A request line's level: ``error`` for a 5xx status, else ``info``."""
    return "error" if status >= 500 else "info"


def _request_line(entry: tuple[Any, ...], timestamp: _Timestamp, pid: int, slot: int) -> bytes:
    """The request line of one deferred entry (in ``_RequestLines``'s order) as
    ``FastLines.emit`` builds it: the path for what the templates cannot encode."""
    fields = _fields(*entry[:9])
    return _line(
        "service.request", fields, "request", _level_of(entry[3]), timestamp.at(entry[9]), pid, slot
    )


def duration_ms(duration_s: float) -> float:
    """``round(duration_s * 1000.0, 3)``, the ``duration_ms`` of a line, without ``round``'s
    decimal round trip in the common case (it costs about half a microsecond). ``round`` gives
    the float nearest to ``n / 1000``, ``n`` the integer nearest to the exact milliseconds
    times 1000; so does ``n / 1000`` in Python (integers below 2**53 divide correctly
    rounded). The product in floats is within 1e-4 of the exact one below 1e12, so when it is
    not within 0.01 of halfway between two integers, rounding it gives the same ``n``. The rest
    (near halfway, zero, negative, huge or not finite) goes to ``round``."""
    ms = duration_s * 1000.0
    micros = ms * 1000.0
    if 0.0 < micros < 1e12:
        whole = int(micros + 0.5)
        if -0.49 < micros - whole < 0.49:
            return whole / 1000
    return round(ms, 3)


def _request_fields(
    request: HTTPRequest, response: HTTPResponse, duration_s: float
) -> dict[str, Any]:
    """The fields of the ``request`` line, on either path (fast JSON or structlog)."""
    return _fields(
        request.request_id,
        request.method,
        request.path,
        response.status,
        duration_s,
        response.operation_type,
        response.operation_name,
        request.remote,
        response.user,
    )


def _fields(
    request_id: str,
    method: str,
    path: str,
    status: int,
    duration_s: float,
    operation_type: str,
    operation_name: str | None,
    remote: str | None,
    user: str | None,
) -> dict[str, Any]:
    """The ``request`` line's fields from their values; ``user`` only when there is one."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": duration_ms(duration_s),
        "operation_type": operation_type,
        "operation_name": operation_name,
        "remote": remote,
    }
    if user is not None:
        fields["user"] = user
    return fields


class Logs:
    """What one ``configure_logging`` call set up: the loggers the server's hot paths call.

    Built only by ``configure_logging``; a worker keeps the one it made after fork and hands it
    to the server it builds."""

    __slots__ = ("_level", "_processors", "_stream", "_wrapper_class", "settings", "slot", "writer")

    def __init__(
        self,
        settings: Settings,
        slot: int | None,
        processors: list[Any],
        wrapper_class: type[Any],
        stream: TextIO,
        level: int = logging.INFO,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self._processors = processors
        self._wrapper_class = wrapper_class
        self._stream = stream
        self._level = level
        self.writer = LineWriter(stream)

    def flush(self) -> None:
        """Write the lines still buffered (see ``LineWriter``)."""
        self.writer.flush()

    def _fast(self) -> FastLines | None:
        """The orjson path for the JSON format; ``None`` for the console format."""
        if self.settings.log_format != "json":
            return None
        return FastLines(self.writer, self.slot)

    def logger(self, name: str, **initial_values: Any) -> Any:
        """A structlog logger whose lines carry ``logger=name`` (then ``initial_values``),
        rendered by this configuration's processors."""
        return self._wrapper_class(
            structlog.WriteLogger(self._stream),
            processors=self._processors,
            context={"logger": name, **initial_values},
        )

    def request_logger(self) -> RequestLogger:
        """The function the transport calls after each HTTP response: one ``event="request"``
        line (``error`` level for 5xx)."""
        fast = self._fast()
        if fast is not None:
            return self._fast_request_logger(fast)
        log = self.logger("service.request")
        info = log.info
        error = log.error

        def log_request(request: HTTPRequest, response: HTTPResponse, duration_s: float) -> None:
            status = response.status
            fields = _request_fields(request, response, duration_s)
            (error if status >= 500 else info)("request", **fields)

        return log_request

    def _fast_request_logger(self, fast: FastLines) -> RequestLogger:
        info_on = self._level <= logging.INFO
        error_on = self._level <= logging.ERROR
        slot = fast.slot
        if slot is None:  # outside a supervised worker: the general path
            emit = fast.emit

            def log_any(request: HTTPRequest, response: HTTPResponse, duration_s: float) -> None:
                error = response.status >= 500
                if error_on if error else info_on:
                    fields = _request_fields(request, response, duration_s)
                    emit("service.request", "error" if error else "info", "request", fields)

            return log_any

        # A worker's line, the one of every request: its values kept in the request's turn
        # (``LineWriter.deferred``, never replaced), the line built with the others of its
        # batch, in one place, in the order ``emit`` gives it (``tests/unit/test_request_line.py``
        # checks the bytes are the same).
        writer = fast.writer
        clock = time.time_ns
        writer.render = _RequestLines(fast.timestamp, fast.pid, slot)
        deferred = writer.deferred
        keep = deferred.append
        defer_max = writer.DEFER_MAX
        render_deferred = writer.render_deferred

        # Statuses below ``floor`` get no line: every one at info, 5xx (``error``) at warning
        # and error, none above. The line's level follows from its status (``_RequestLines``).
        floor = 0 if info_on else 500 if error_on else 1000

        def log_request(request: HTTPRequest, response: HTTPResponse, duration_s: float) -> None:
            if response.status < floor:
                return
            keep(
                (
                    request.request_id,
                    request.method,
                    request.path,
                    response.status,
                    duration_s,
                    response.operation_type,
                    response.operation_name,
                    request.remote,
                    response.user,
                    clock(),
                )
            )
            if len(deferred) >= defer_max:
                render_deferred()
            elif writer.scheduled is None:
                writer.schedule()

        return log_request

    def ws_operation_logger(self) -> WSOperationLogger:
        """The function a WebSocket session calls when an operation ends: one
        ``event="ws_operation"`` line."""
        fast = self._fast()
        info_on = self._level <= logging.INFO
        info = self.logger("service.ws").info

        def emit(**fields: Any) -> None:
            if fast is None:
                info("ws_operation", **fields)
            elif info_on:
                fast.emit("service.ws", "info", "ws_operation", fields)

        def log_ws_operation(
            *,
            request_id: str,
            subprotocol: str,
            op_id: str,
            operation_type: str,
            operation_name: str | None,
            status: str,
            duration_s: float,
            user: str | None,
        ) -> None:
            fields: dict[str, Any] = {
                "request_id": request_id,
                "subprotocol": subprotocol,
                "op_id": op_id,
                "operation_type": operation_type,
                "operation_name": operation_name,
                "status": status,
                "duration_ms": duration_ms(duration_s),
            }
            if user is not None:
                fields["user"] = user
            emit(**fields)

        return log_ws_operation


def configure_logging(settings: Settings, *, slot: int | None = None) -> Logs:
    """Route structlog and stdlib logging through one renderer on stderr and return the
    ``Logs`` for this setup. Calling it again (e.g. in a worker after fork, now with its
    ``slot``) replaces the process-wide parts of the earlier setup: the root handler and
    structlog's configuration; loggers from an earlier ``Logs`` keep that one's processors."""
    level = _level(settings)
    final = _renderer(settings)
    stream = sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _Timestamp(),
        _AddProcess(slot),
    ]
    processors: list[Any] = [
        *shared,
        _default_logger_name,
        structlog.processors.StackInfoRenderer(),
        *final,
    ]
    wrapper_class = structlog.make_filtering_bound_logger(level)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper_class,
        logger_factory=structlog.WriteLoggerFactory(stream),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            *shared,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = _Handler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return Logs(settings, slot, processors, wrapper_class, stream, level)


def get_logger(name: str, **initial_values: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name``, rendered by the configuration
    current when it is called (call it after ``configure_logging``; with a ``Logs`` at hand,
    prefer ``logs.logger(name)``)."""
    return structlog.get_logger().bind(logger=name, **initial_values)


def clear_request_context() -> None:
    """Drop context variables bound during a request (``structlog.contextvars``)."""
    structlog.contextvars.clear_contextvars()
