"""GraphQL error formatting and the error codes clients see in ``extensions.code``.

The codes are the members of ``service.protocols.codes.ErrorCode`` (Apollo Server's names where
it has one, ours named after the HTTP status or limit otherwise).

Errors that a resolver raises as ``GraphQLError`` are the resolver's message to the client and are
shown as they are. Any other exception is our bug (or an outage) and is masked: the client sees
only ``Internal server error`` and the request id that also appears in the logs. Tracebacks never
reach clients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError

from service.engine.context import request_id_of
from service.protocols.codes import ErrorCode

#: The label values of ``graphql_errors_total``: every ``ErrorCode``, plus ``OTHER`` for codes
#: a resolver invented. Derived from the enum, so a new code is counted under its own name.
OTHER = "OTHER"
KNOWN_CODES: frozenset[str] = frozenset(ErrorCode)
METRIC_CODES: tuple[str, ...] = (*ErrorCode, OTHER)

# ``exception_handler(exc, context) -> dict | None``: called for every masked exception. It may
# return a formatted error (``{"message": ..., "extensions": ...}``) to send instead of the masked
# one; ``None`` keeps the default. The default handler logs the exception with its traceback.
ExceptionHandler = Callable[[BaseException, Any], "dict[str, Any] | None"]

log = logging.getLogger("service.engine")


def default_exception_handler(exc: BaseException, context: Any) -> dict[str, Any] | None:
    """Log ``exc`` with its traceback and the request id; keep the masked error."""
    request_id = request_id_of(context)
    log.error(
        "unhandled exception in resolver",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"request_id": request_id},
    )
    return None


def call_handler(
    exc: BaseException, context: Any, handler: ExceptionHandler | None
) -> dict[str, Any] | None:
    """Give ``exc`` to ``handler`` (default: log it); its replacement error, if any. The handler
    itself raising never takes the request down."""
    try:
        return (handler or default_exception_handler)(exc, context)
    except Exception:
        log.exception("exception_handler raised")
        return None


def masked(context: Any) -> dict[str, Any]:
    """What a client sees of our own failure: only the request id the logs also carry."""
    request_id = request_id_of(context)
    return {
        "message": "Internal server error" + (f" (request id {request_id})" if request_id else ""),
        "extensions": {"code": ErrorCode.INTERNAL_SERVER_ERROR, "requestId": request_id},
    }


def error(message: str, code: ErrorCode, **extensions: Any) -> dict[str, Any]:
    """A formatted GraphQL error: ``{"message": str, "extensions": {"code": code, ...}}``."""
    return {"message": message, "extensions": {"code": code, **extensions}}


def error_code(formatted: dict[str, Any]) -> str:
    """The bounded ``extensions.code`` of a formatted error, for metrics (unknown -> ``OTHER``)."""
    extensions = formatted.get("extensions")
    code = extensions.get("code") if isinstance(extensions, dict) else None
    return code if code in KNOWN_CODES else OTHER


def format_errors(
    errors: list[GraphQLError],
    context: Any,
    handler: ExceptionHandler | None,
) -> list[dict[str, Any]]:
    """Format execution errors per the GraphQL spec, section 7.1.2 (Errors).

    Shape: ``[{"message", "locations"?, "path"?, "extensions"?}]``. Non-GraphQL exceptions are
    masked to ``INTERNAL_SERVER_ERROR`` with ``extensions.requestId``; ``handler`` is called
    for each of them.
    """
    out: list[dict[str, Any]] = []
    for err in errors:
        original = err.original_error
        if original is None or isinstance(original, GraphQLError):
            out.append(err.formatted)  # type: ignore[arg-type]
            continue
        replacement = call_handler(original, context, handler)
        formatted = dict(replacement) if replacement is not None else masked(context)
        if err.locations:
            formatted["locations"] = [loc.formatted for loc in err.locations]
        if err.path is not None:
            formatted["path"] = err.path
        out.append(formatted)
    return out
