"""Logs: one line per event, the same renderer for structlog and the stdlib ``logging`` module.

``configure_logging(settings, slot=k)`` sets up two paths that end in the same renderer:
- structlog loggers (our hot paths: the request line, WebSocket operation lines) are native
  structlog filtering loggers that render and write to stderr directly, without the stdlib;
- stdlib records (gunicorn, asyncio, ``logging.getLogger("service.*")``) reach a handler on the
  root logger whose ``structlog.stdlib.ProcessorFormatter`` runs the same processors, including
  the record's ``extra`` fields.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``event``, ``logger``, ``pid`` and,
in a supervised worker, ``slot``. ``log_format="json"``: one JSON object per line, exceptions as
structured tracebacks (``exception``: a list of dicts). ``log_format="console"``: structlog's
``ConsoleRenderer`` with pretty tracebacks.

Per-request fields are passed as keyword arguments, never bound in context variables, so nothing
leaks from one keep-alive request to the next. Code that does bind context variables calls
``clear_request_context()`` when its request ends.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

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


class _State:
    """What every line needs from this process: its pid (refreshed after fork) and slot."""

    __slots__ = ("pid", "slot", "ws_logger")

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.slot: int | None = None
        self.ws_logger: Any = None


_state = _State()


def _after_fork() -> None:
    _state.pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class _Handler(logging.StreamHandler[TextIO]):
    """The root handler ``configure_logging`` installs (and replaces when called again)."""


def _add_process(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
    event_dict["pid"] = _state.pid
    if _state.slot is not None:
        event_dict.setdefault("slot", _state.slot)
    return event_dict


class _Timestamp:
    """``timestamp``: ISO 8601 UTC with microseconds and ``Z``. Same output as structlog's
    ``TimeStamper(fmt="iso", utc=True)``, at a fraction of the cost: the date and time up to the
    second are formatted once per second."""

    __slots__ = ("prefix", "second")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def __call__(self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> Any:
        second, fraction_ns = divmod(time.time_ns(), 1_000_000_000)
        if second != self.second:
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = second
        event_dict["timestamp"] = f"{self.prefix}.{fraction_ns // 1000:06d}Z"
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


def configure_logging(settings: Settings, *, slot: int | None = None) -> None:
    """Route structlog and stdlib logging through one renderer on stderr. Idempotent: calling it
    again (e.g. in a worker after fork, now with its ``slot``) replaces the earlier setup."""
    level = _level(settings)
    final = _renderer(settings)
    _state.slot = slot
    _state.pid = os.getpid()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _Timestamp(),
        _add_process,
    ]
    structlog.configure(
        processors=[
            *shared,
            _default_logger_name,
            structlog.processors.StackInfoRenderer(),
            *final,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
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
    handler = _Handler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    _state.ws_logger = structlog.get_logger().bind(logger="service.ws")


def get_logger(name: str, **initial_values: Any) -> Any:
    """A structlog logger whose lines carry ``logger=name``; it follows later reconfiguration."""
    return structlog.get_logger(logger=name, **initial_values)


def clear_request_context() -> None:
    """Drop context variables bound during a request (``structlog.contextvars``)."""
    structlog.contextvars.clear_contextvars()


def make_request_logger(
    settings: Settings,
) -> Callable[[HTTPRequest, HTTPResponse, float], None]:
    """The function the transport calls after each HTTP response: one ``event="request"`` line
    (``error`` level for 5xx). Call ``configure_logging`` first: the logger is bound once here."""
    log = structlog.get_logger().bind(logger="service.request")
    info = log.info
    error = log.error

    def log_request(request: HTTPRequest, response: HTTPResponse, duration_s: float) -> None:
        status = response.status
        fields: dict[str, Any] = {
            "request_id": request.request_id,
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": round(duration_s * 1000.0, 3),
            "operation_type": response.operation_type,
            "operation_name": response.operation_name,
            "remote": request.remote,
        }
        if response.user is not None:
            fields["user"] = response.user
        (error if status >= 500 else info)("request", **fields)

    return log_request


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
    """One ``event="ws_operation"`` line when a WebSocket operation ends; ``status`` is
    ``complete``, ``error`` or ``cancelled``."""
    log = _state.ws_logger
    if log is None:
        log = _state.ws_logger = structlog.get_logger().bind(logger="service.ws")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "subprotocol": subprotocol,
        "op_id": op_id,
        "operation_type": operation_type,
        "operation_name": operation_name,
        "status": status,
        "duration_ms": round(duration_s * 1000.0, 3),
    }
    if user is not None:
        fields["user"] = user
    log.info("ws_operation", **fields)
