"""The GraphQL-over-HTTP core: an ``HTTPRequest`` in, an ``HTTPResponse`` out, no sockets.

Both transports (the native httptools protocol and the ASGI adapter) call ``HTTPCore.handle``.
It answers synchronously when it can (cached document, sync resolvers, sync context) and returns
an awaitable otherwise.

Status codes (GraphQL-over-HTTP draft, section 7):
- 200: executed; also parse/validation/variable errors when the response type is
  ``application/json``.
- 400: malformed request; parse/validation/variable errors with
  ``application/graphql-response+json`` (no ``data`` key in the body).
- 401: ``get_context`` raised ``HTTPError(401)`` (invalid token).
- 404 unknown path; 405 wrong method, or a mutation over GET (``Allow: POST``); 406 Accept;
  413 body/document/variables too large; 415 Content-Type; 503 overloaded (``Retry-After``).

Persisted documents (``service.engine.persisted``, passed in as ``persisted``): a request that
names one by id is resolved before the document is prepared, synchronously when the id is
known here and through the shared store otherwise; a document sent with its hash is registered
once it prepared without errors. Streaming (``streams=True``): ``Accept: text/event-stream``
(GraphQL over SSE) or ``multipart/mixed;subscriptionSpec=1.0`` (Apollo's multipart
subscriptions) is answered with an ``HTTPStream`` (``service.engine.streams``).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from service.engine import errors as codes
from service.engine.context import user_sub
from service.engine.executor import Engine, Outcome, Prepared, request_failure
from service.engine.persisted import Lookup, PersistedError, PersistedOperations
from service.engine.streams import StreamedOperation, failure_chunks
from service.protocols.codes import ErrorCode
from service.protocols.http import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    GraphQLParams,
    HTTPError,
    negotiate,
    parse_get,
    parse_post,
)
from service.protocols.streams import MULTIPART, SSE, framing_for, stream_kind


@dataclasses.dataclass(slots=True)
class HTTPRequest:
    """One HTTP request as the core sees it. ``headers`` has lower-cased names; repeated headers
    are joined with ``", "``. ``remote`` is the peer address (``"host:port"`` or the unix socket
    path) and ``request_id`` comes from ``X-Request-ID`` (set by nginx) or is generated."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    remote: str | None = None
    request_id: str = ""


@dataclasses.dataclass(slots=True)
class HTTPResponse:
    """Status, headers and body bytes, plus what the request log line needs."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    operation_type: str = "unknown"
    operation_name: str | None = None
    user: str | None = None


@dataclasses.dataclass(slots=True)
class HTTPStream(HTTPResponse):
    """A response whose body is written as it is produced (``service.engine.streams``):
    ``chunks`` yields the body's pieces, and the transport closes it (``aclose``) when the
    client leaves. ``body`` stays empty. A subclass, so whatever handles responses (routing,
    headers, log lines) handles streams too; only the transport must know to write one."""

    chunks: AsyncIterator[bytes] | None = None


ContextGetter = Callable[[HTTPRequest], Any]

# Content-Type header values for the two response media types (built once, not per response).
_CONTENT_TYPES = {
    media: media + "; charset=utf-8" for media in (APPLICATION_JSON, GRAPHQL_RESPONSE_JSON)
}


class RequestIds:
    """Request ids for one server: ``X-Request-ID`` when the client (nginx) sent a sane one,
    else ``<pid hex>-<32 random bits hex>-<counter hex>``: unique per server and far cheaper
    than ``uuid4`` (about 10 us). Make one per server, after any fork."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}-{secrets.token_hex(4)}-"
        self._counter = itertools.count(1)

    def for_headers(self, headers: dict[str, str]) -> str:
        """The id for a request with these (lower-cased) headers."""
        given = headers.get("x-request-id")
        if given and len(given) <= 200 and given.isprintable():
            return given
        return f"{self._prefix}{next(self._counter):x}"


def default_context(request: HTTPRequest) -> dict[str, Any]:
    """The context resolvers get when no ``get_context`` is given:
    ``{"request": HTTPRequest, "request_id": str, "user": None}``."""
    return {"request": request, "request_id": request.request_id, "user": None}


class HTTPCore:
    """GraphQL over HTTP on one path (default ``/graphql``)."""

    def __init__(
        self,
        engine: Engine,
        *,
        get_context: ContextGetter | None = None,
        path: str = "/graphql",
        persisted: PersistedOperations | None = None,
        streams: bool = False,
    ) -> None:
        self.engine = engine
        self.settings = engine.settings
        self.get_context = get_context or default_context
        self.path = path
        self.recorder = engine.recorder
        #: APQ and trusted documents; ``None``: a request naming a document by id alone gets
        #: ``PERSISTED_QUERY_NOT_SUPPORTED``.
        self.persisted = persisted
        #: Answer SSE and multipart requests with an ``HTTPStream`` (the transport must write
        #: one); off, such requests are answered with JSON as the Accept header otherwise allows.
        self.streams = streams

    # --- metrics -------------------------------------------------------------------------------
    def _record(
        self, transport: str, outcome_status: str, operation_type: str, name: str | None, t0: float
    ) -> None:
        self.recorder.answered(
            transport, operation_type, outcome_status, name, time.perf_counter() - t0
        )

    def count_errors(self, errors: list[dict[str, Any]]) -> None:
        for item in errors:
            self.recorder.error(codes.error_code(item))

    # --- responses -----------------------------------------------------------------------------
    def reject(self, exc: HTTPError, media: str, t0: float) -> HTTPResponse:
        """Answer a request error with ``{"errors": [{"message", "extensions": {"code"}}]}``."""
        body = {"errors": [codes.error(exc.message, exc.code)]}
        self.count_errors(body["errors"])
        self._record("http", "rejected", "unknown", None, t0)
        headers = [("content-type", _CONTENT_TYPES[media]), *exc.headers]
        return HTTPResponse(exc.status, headers, orjson.dumps(body))

    def respond(
        self,
        outcome: Outcome,
        media: str,
        name: str | None,
        context: Any,
        t0: float,
    ) -> HTTPResponse:
        body = outcome.body
        errors = body.get("errors")
        if outcome.request_error:
            status = 400 if media == GRAPHQL_RESPONSE_JSON else 200
            label = "rejected"
        else:
            status = 200
            label = "error" if errors else "ok"
        if errors:
            self.count_errors(errors)
        self._record("http", label, outcome.operation_type, name, t0)
        try:
            payload = orjson.dumps(body)
        except TypeError as exc:  # a resolver returned something JSON cannot carry
            return self.internal_error(exc, context, media, t0)
        return HTTPResponse(
            status,
            [("content-type", _CONTENT_TYPES[media])],
            payload,
            outcome.operation_type,
            name,
            user_sub(context),
        )

    def internal_error(
        self, exc: BaseException, context: Any, media: str, t0: float
    ) -> HTTPResponse:
        """500 for our own failures; the client sees only the request id."""
        codes.call_handler(exc, context, self.engine.exception_handler)
        body = {"errors": [codes.masked(context)]}
        self.count_errors(body["errors"])
        self._record("http", "rejected", "unknown", None, t0)
        return HTTPResponse(500, [("content-type", _CONTENT_TYPES[media])], orjson.dumps(body))

    # --- the pipeline --------------------------------------------------------------------------
    def handle(self, request: HTTPRequest) -> HTTPResponse | Awaitable[HTTPResponse]:
        """Answer one request on the GraphQL path. Never raises for client input."""
        t0 = time.perf_counter()
        media = APPLICATION_JSON
        kind = None
        try:
            if request.path != self.path:
                raise HTTPError(
                    404,
                    f"Not found: {request.path!r}; GraphQL is served on {self.path!r}.",
                    code=ErrorCode.NOT_FOUND,
                )
            accept = request.headers.get("accept")
            if self.streams:
                kind = stream_kind(accept)
            if kind is None:
                media = negotiate(accept)
            else:
                try:
                    media = negotiate(accept)
                except HTTPError:
                    media = APPLICATION_JSON  # for errors answered outside the stream
            method = request.method
            if method == "POST":
                params = parse_post(request.headers.get("content-type"), request.body, orjson.loads)
                variables_bytes = len(request.body) - len(params.query)
            elif method == "GET":
                params = parse_get(request.query_string, orjson.loads)
                variables_bytes = len(request.query_string) - len(params.query)
            else:
                raise HTTPError(
                    405,
                    f"Method {method} is not allowed: use GET for queries or POST.",
                    headers=(("allow", "GET, POST"),),
                    code=ErrorCode.METHOD_NOT_ALLOWED,
                )
            limit = self.settings.max_variables_bytes
            if (
                variables_bytes > limit
                and params.variables
                and len(orjson.dumps(params.variables)) > limit
            ):
                raise HTTPError(
                    413,
                    f"The variables are larger than the limit of {limit} bytes.",
                    code=ErrorCode.VARIABLES_TOO_LARGE,
                )
        except HTTPError as exc:
            return self.reject(exc, media, t0)
        persisted = self.persisted
        register = None
        if persisted is None:
            if params.document_id is not None and not params.query:
                return self.reject(
                    HTTPError(
                        400,
                        "Persisted queries are not supported.",
                        code=ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
                    ),
                    media,
                    t0,
                )
        elif persisted.applies(params.document_id):
            try:
                lookup = persisted.resolve(params.query, params.document_id)
            except PersistedError as exc:
                return self._persisted_error(exc, media, t0, kind)
            if not isinstance(lookup, Lookup):
                return self._resolved_later(request, params, media, t0, kind, lookup)
            params.query = lookup.query
            register = lookup.register
        return self._run(request, params, media, t0, kind, register)

    def _persisted_error(
        self, exc: PersistedError, media: str, t0: float, kind: str | None
    ) -> HTTPResponse:
        if not exc.request_error:
            return self.reject(HTTPError(400, exc.message, code=exc.code), media, t0)
        failure = request_failure([codes.error(exc.message, exc.code)], "unknown", exc.code)
        if kind == SSE:
            return self._failure_stream(kind, failure)
        return self.respond(failure, media, None, None, t0)

    def _failure_stream(self, kind: str, failure: Outcome) -> HTTPStream:
        framing = framing_for(kind)
        return HTTPStream(
            200, list(framing.headers), b"", chunks=failure_chunks(self.engine, framing, failure)
        )

    async def _resolved_later(
        self,
        request: HTTPRequest,
        params: GraphQLParams,
        media: str,
        t0: float,
        kind: str | None,
        pending: Awaitable[Lookup],
    ) -> HTTPResponse:
        try:
            lookup = await pending
        except PersistedError as exc:
            return self._persisted_error(exc, media, t0, kind)
        params.query = lookup.query
        response = self._run(request, params, media, t0, kind, lookup.register)
        return response if isinstance(response, HTTPResponse) else await response

    def _run(
        self,
        request: HTTPRequest,
        params: GraphQLParams,
        media: str,
        t0: float,
        kind: str | None = None,
        register: str | None = None,
    ) -> HTTPResponse | Awaitable[HTTPResponse]:
        prepared = self.engine.prepare(params.query, params.operation_name)
        if isinstance(prepared, tuple) and (register is None or prepared[2] is not None):
            return self._run_prepared(request, params, media, t0, prepared, kind)
        return self._prepared_later(request, params, media, t0, prepared, kind, register)

    async def _prepared_later(
        self,
        request: HTTPRequest,
        params: GraphQLParams,
        media: str,
        t0: float,
        pending: Prepared | Awaitable[Prepared],
        kind: str | None = None,
        register: str | None = None,
    ) -> HTTPResponse:
        prepared = pending if isinstance(pending, tuple) else await pending
        if register is not None and prepared[2] is None and self.persisted is not None:
            # APQ: the document came with its hash and prepared without errors; keep it for
            # every worker before running it.
            await self.persisted.register(register, params.query)
        response = self._run_prepared(request, params, media, t0, prepared, kind)
        return response if isinstance(response, HTTPResponse) else await response

    def _run_prepared(
        self,
        request: HTTPRequest,
        params: GraphQLParams,
        media: str,
        t0: float,
        prepared: Prepared,
        kind: str | None = None,
    ) -> HTTPResponse | Awaitable[HTTPResponse]:
        engine = self.engine
        name = params.operation_name
        cached, operation_type, failure = prepared
        if failure is not None:
            if failure.error_code == ErrorCode.DOCUMENT_TOO_LARGE:
                return self.reject(
                    HTTPError(
                        413, failure.body["errors"][0]["message"], code=ErrorCode.DOCUMENT_TOO_LARGE
                    ),
                    media,
                    t0,
                )
            if kind == SSE:
                return self._failure_stream(kind, failure)
            return self.respond(failure, media, name, None, t0)
        assert cached is not None
        label = name if name is not None else cached.single_name()
        if kind == MULTIPART and operation_type != "subscription":
            kind = None  # Apollo's multipart protocol is for subscriptions; the rest is JSON
        if operation_type == "mutation" and request.method == "GET":
            return self.reject(
                HTTPError(
                    405,
                    "Mutations are not allowed over GET; use POST.",
                    headers=(("allow", "POST"),),
                    code=ErrorCode.METHOD_NOT_ALLOWED,
                ),
                media,
                t0,
            )
        if operation_type == "subscription" and kind is None:
            return self.reject(
                HTTPError(
                    400,
                    "Subscriptions are served over WebSocket (graphql-transport-ws or graphql-ws) "
                    "on this path"
                    + (
                        ", or over HTTP with Accept: text/event-stream (GraphQL over SSE) or "
                        'multipart/mixed;subscriptionSpec="1.0" (multipart subscriptions).'
                        if self.streams
                        else ", not over plain HTTP."
                    ),
                ),
                media,
                t0,
            )
        if engine.inflight >= self.settings.max_inflight:
            return self.reject(
                HTTPError(
                    503,
                    f"The server is at its limit of {self.settings.max_inflight} operations in "
                    "flight; retry shortly.",
                    headers=(("retry-after", "1"),),
                    code=ErrorCode.SERVICE_UNAVAILABLE,
                ),
                media,
                t0,
            )
        try:
            context = self.get_context(request)
        except HTTPError as exc:
            return self.reject(exc, media, t0)
        except Exception as exc:
            return self.internal_error(exc, {"request_id": request.request_id}, media, t0)
        if inspect.isawaitable(context):
            return self._run_async(
                context, request, params, cached, operation_type, media, t0, label, kind
            )
        if kind is not None:
            return self._stream(kind, params, cached, operation_type, label, context, t0)
        try:
            outcome = engine.execute(cached, operation_type, params.variables, name, context)
        except Exception as exc:
            return self.internal_error(exc, context, media, t0)
        if isinstance(outcome, Outcome):
            return self.respond(outcome, media, label, context, t0)
        return self._await_outcome(outcome, media, label, context, t0)

    async def _await_outcome(
        self, pending: Awaitable[Outcome], media: str, name: str | None, context: Any, t0: float
    ) -> HTTPResponse:
        recorder = self.recorder
        recorder.inflight(1)
        try:
            outcome = await pending
        except Exception as exc:
            return self.internal_error(exc, context, media, t0)
        finally:
            recorder.inflight(-1)
        return self.respond(outcome, media, name, context, t0)

    async def _run_async(
        self,
        pending_context: Awaitable[Any],
        request: HTTPRequest,
        params: GraphQLParams,
        cached: Any,
        operation_type: str,
        media: str,
        t0: float,
        label: str | None = None,
        kind: str | None = None,
    ) -> HTTPResponse:
        try:
            context = await pending_context
        except HTTPError as exc:
            return self.reject(exc, media, t0)
        except Exception as exc:
            return self.internal_error(exc, {"request_id": request.request_id}, media, t0)
        if kind is not None:
            return self._stream(kind, params, cached, operation_type, label, context, t0)
        try:
            outcome = self.engine.execute(
                cached, operation_type, params.variables, params.operation_name, context
            )
        except Exception as exc:
            return self.internal_error(exc, context, media, t0)
        if not isinstance(outcome, Outcome):
            return await self._await_outcome(outcome, media, label, context, t0)
        return self.respond(outcome, media, label, context, t0)

    def _stream(
        self,
        kind: str,
        params: GraphQLParams,
        cached: Any,
        operation_type: str,
        label: str | None,
        context: Any,
        t0: float,
    ) -> HTTPStream:
        """The operation answered as a stream (SSE or multipart), run as the body is read."""
        framing = framing_for(kind)
        operation = StreamedOperation(
            self.engine,
            framing,
            cached,
            operation_type,
            params.variables,
            params.operation_name,
            label,
            context,
            t0,
            self.settings.http_stream_heartbeat_s,
        )
        return HTTPStream(
            200,
            list(framing.headers),
            b"",
            operation_type,
            label,
            user_sub(context),
            operation.chunks(),
        )
