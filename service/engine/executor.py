"""The GraphQL pipeline shared by every transport: cache lookup, execute, format.

``Engine.execute`` returns an ``Outcome`` directly when execution finished synchronously (the common
case for cheap queries: no event-loop round trip, no task) or an awaitable of one when a resolver
is async. Transports branch on ``inspect.isawaitable`` once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
from graphql import ExecutionResult, GraphQLSchema, create_source_event_stream, execute

from service.engine import errors as codes
from service.engine.cache import CachedDocument, DocumentCache
from service.engine.compiled import Compiler
from service.engine.errors import ExceptionHandler, format_errors
from service.engine.limits import Limits
from service.engine.recorder import NullRecorder, Recorder
from service.protocols.codes import ErrorCode
from service.settings import Settings


@dataclasses.dataclass(slots=True)
class Outcome:
    """The result of one operation.

    ``body`` is the GraphQL response map (spec section 7.1): ``{"data": ..., "errors"?: [...]}``,
    or ``{"errors": [...]}`` without ``data`` when the request failed before execution
    (``request_error`` is then true: parse, validation, variable coercion or operation selection
    errors). ``operation_type`` is ``query``, ``mutation``, ``subscription`` or ``unknown``.
    """

    body: dict[str, Any]
    operation_type: str
    request_error: bool = False
    error_code: ErrorCode | None = None
    #: Subscription events only: when the event was broadcast (unix seconds), if known.
    sent_at: float | None = None
    #: ``body`` as JSON text, once ``json()`` made it (shared results are encoded once).
    encoded: str | None = None
    #: ``body`` as UTF-8 JSON bytes, once ``json_bytes()`` made them.
    encoded_bytes: bytes | None = None

    def json(self) -> str:
        """``body`` as compact JSON text, encoded on the first call only."""
        if self.encoded is None:
            self.encoded = self.json_bytes().decode()
        return self.encoded

    def json_bytes(self) -> bytes:
        """``body`` as compact UTF-8 JSON bytes (what ``json()`` returns, encoded), made on the
        first call only: subscribers sharing an execution share these bytes too."""
        if self.encoded_bytes is None:
            self.encoded_bytes = orjson.dumps(self.body)
        return self.encoded_bytes


#: ``Engine.prepare``'s answer: ``(document, operation_type, failure)``.
Prepared = tuple[CachedDocument | None, str, "Outcome | None"]

#: New documents up to this many characters are prepared on the event loop (well under 10 ms);
#: longer ones in the engine's preparation thread.
PREPARE_INLINE_BYTES = 1024

#: Types whose values are never awaitable: the plain values most resolvers return.
PLAIN_VALUES = frozenset({str, int, float, bool, type(None), dict, list, tuple, bytes})


def fast_is_awaitable(value: Any) -> bool:
    """graphql-core's ``is_awaitable`` hook, with a shortcut for the plain values most resolvers
    return (it is called several times per field: about 12% of a 600-field query here)."""
    if type(value) in PLAIN_VALUES:
        return False
    return inspect.isawaitable(value)


def schema_of(schema: Any) -> GraphQLSchema:
    """Accept a graphene ``Schema`` or a graphql-core ``GraphQLSchema``."""
    if isinstance(schema, GraphQLSchema):
        return schema
    inner = getattr(schema, "graphql_schema", None)
    if isinstance(inner, GraphQLSchema):
        return inner
    raise TypeError(f"expected a graphene.Schema or GraphQLSchema, got {type(schema).__name__}")


def request_failure(errors: list[dict[str, Any]], operation_type: str, code: ErrorCode) -> Outcome:
    return Outcome({"errors": errors}, operation_type, True, code)


class Engine:
    """Runs GraphQL operations against one schema with a shared document cache.

    ``recorder`` receives cache lookups (and is what the transports built on this engine use);
    ``None`` records nothing.
    """

    def __init__(
        self,
        schema: Any,
        settings: Settings,
        *,
        middleware: Sequence[Any] | None = None,
        exception_handler: ExceptionHandler | None = None,
        recorder: Recorder | None = None,
    ) -> None:
        self.schema = schema_of(schema)
        self.settings = settings
        self.middleware = list(middleware) if middleware else None
        self.exception_handler = exception_handler
        self.limits = Limits(
            max_depth=settings.max_depth,
            max_aliases=settings.max_aliases,
            max_fields=settings.max_fields,
        )
        self.cache = DocumentCache(
            self.schema,
            size=settings.document_cache_size,
            limits=self.limits,
            introspection=settings.introspection,
            recorder=recorder,
        )
        #: Runs cached documents without graphql-core's per-field work (None: turned off).
        self.compiler = (
            Compiler(self.schema, middleware=self.middleware, is_awaitable=fast_is_awaitable)
            if settings.compiled_execution
            else None
        )
        self.inflight = 0
        self.recorder: Recorder = recorder or NullRecorder()
        self.shared_results = SharedResults()
        self._share_groups: weakref.WeakValueDictionary[tuple[Any, ...], ShareGroup] = (
            weakref.WeakValueDictionary()
        )
        self._executor: ThreadPoolExecutor | None = None
        self._preparing: dict[str, asyncio.Future[CachedDocument]] = {}

    def prepare(self, query: str, operation_name: str | None) -> Prepared | Awaitable[Prepared]:
        """Look the document up and pick the operation.

        Returns ``(document, operation_type, failure)``; ``failure`` is set when the request
        cannot run (its ``Outcome`` has ``request_error``). A cached document, and a new one of at
        most ``PREPARE_INLINE_BYTES``, is answered at once. A larger new document is parsed and
        validated in the engine's preparation thread and an awaitable is returned, so that no
        document of the allowed size holds the event loop for long (parsing costs about 8 us a
        token here; a 100 KB document can take over 100 ms). Requests for the same new document
        share one preparation.
        """
        limit = self.settings.max_document_bytes
        # A UTF-8 character is at most 4 bytes: only long strings need encoding to measure.
        if len(query) * 4 > limit and len(query.encode("utf-8", "surrogatepass")) > limit:
            return (
                None,
                "unknown",
                request_failure(
                    [
                        codes.error(
                            f"The document is larger than the limit of "
                            f"{self.settings.max_document_bytes} bytes.",
                            ErrorCode.DOCUMENT_TOO_LARGE,
                        )
                    ],
                    "unknown",
                    ErrorCode.DOCUMENT_TOO_LARGE,
                ),
            )
        cache = self.cache
        cached = cache.peek(query)
        if cached is None:
            if len(query) > PREPARE_INLINE_BYTES:
                return self._prepare_off_loop(query, operation_name)
            cached = cache.store(query, cache.prepare(query))
        return self._select(cached, operation_name)

    async def _prepare_off_loop(self, query: str, operation_name: str | None) -> Prepared:
        pending = self._preparing.get(query)
        if pending is None:
            if self._executor is None:
                # One thread: preparations queue behind each other instead of taking turns
                # with the event loop for the GIL.
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="graphql-prepare")
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._executor, self.cache.prepare, query)
            self._preparing[query] = pending
            try:
                entry = await asyncio.shield(pending)
            finally:
                self._preparing.pop(query, None)
            self.cache.store(query, entry)
        else:
            entry = await asyncio.shield(pending)
        return self._select(entry, operation_name)

    def _select(self, cached: CachedDocument, operation_name: str | None) -> Prepared:
        if cached.errors is not None:
            code = cached.error_code or ErrorCode.GRAPHQL_VALIDATION_FAILED
            return None, "unknown", request_failure(cached.errors, "unknown", code)
        operation_type, problem = cached.select(operation_name)
        if problem is not None or operation_type is None:
            return (
                None,
                "unknown",
                request_failure(
                    [codes.error(problem or "No operation.", ErrorCode.OPERATION_NOT_FOUND)],
                    "unknown",
                    ErrorCode.OPERATION_NOT_FOUND,
                ),
            )
        return cached, operation_type, None

    def share_group(self, parts: tuple[Any, ...]) -> ShareGroup:
        """The one ``ShareGroup`` for equal ``parts`` (hashable), while any stream holds it."""
        group = self._share_groups.get(parts)
        if group is None:
            group = self._share_groups[parts] = ShareGroup()
        return group

    def close(self) -> None:
        """Stop the preparation thread (it finishes the document in hand)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def execute(
        self,
        cached: CachedDocument,
        operation_type: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
        root_value: Any = None,
    ) -> Outcome | Awaitable[Outcome]:
        """Execute a prepared query or mutation (GraphQL spec section 6.2), or a subscription's
        event (``root_value``): compiled when the compiler handles it, else by graphql-core."""
        compiler = self.compiler
        result = (
            None
            if compiler is None
            else compiler.execute(
                cached.plans,
                cached.document,  # type: ignore[arg-type]
                operation_name,
                root_value,
                context,
                variables,
            )
        )
        if result is None:
            result = execute(
                self.schema,
                cached.document,  # type: ignore[arg-type]
                root_value,
                context,
                variables,
                operation_name,
                middleware=self.middleware,
                is_awaitable=fast_is_awaitable,
            )
        if isinstance(result, ExecutionResult):
            return self.finish(result, operation_type, context)
        return self._finish_async(result, operation_type, context)

    async def _finish_async(
        self, pending: Awaitable[ExecutionResult], operation_type: str, context: Any
    ) -> Outcome:
        self.inflight += 1
        try:
            timeout = self.settings.operation_timeout_s
            try:
                result = await asyncio.wait_for(pending, timeout if timeout > 0 else None)
            except TimeoutError:
                return Outcome(
                    {
                        "data": None,
                        "errors": [
                            codes.error(
                                f"The operation timed out after {timeout:g} s.",
                                ErrorCode.OPERATION_TIMEOUT,
                            )
                        ],
                    },
                    operation_type,
                    False,
                    ErrorCode.OPERATION_TIMEOUT,
                )
        finally:
            self.inflight -= 1
        return self.finish(result, operation_type, context)

    def finish(self, result: ExecutionResult, operation_type: str, context: Any) -> Outcome:
        """Shape an ``ExecutionResult`` into an ``Outcome``, masking internal errors."""
        errors = result.errors
        if not errors:
            return Outcome({"data": result.data}, operation_type)
        formatted = format_errors(errors, context, self.exception_handler)
        if result.data is None and all(err.path is None for err in errors):
            # Variable coercion failed (spec 6.1.2): nothing executed, so no "data" key.
            for item in formatted:
                item.setdefault("extensions", {}).setdefault("code", ErrorCode.BAD_USER_INPUT)
            return request_failure(formatted, operation_type, ErrorCode.BAD_USER_INPUT)
        return Outcome({"data": result.data, "errors": formatted}, operation_type)

    async def subscribe(
        self,
        cached: CachedDocument,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> Outcome | ResponseStream:
        """Start a subscription (GraphQL spec section 6.2.3, CreateSourceEventStream).

        Returns an ``Outcome`` when the subscription could not start (errors), else an async
        iterator of one ``Outcome`` per event (MapSourceToResponseEvent: each event executed
        with this engine's middleware). Closing the iterator closes the source stream.
        """
        source = await create_source_event_stream(
            self.schema,
            cached.document,  # type: ignore[arg-type]
            None,
            context,
            variables,
            operation_name,
        )
        if isinstance(source, ExecutionResult):
            return self.finish(source, "subscription", context)
        return ResponseStream(self, source, cached, variables, operation_name, context)


class ShareGroup:
    """Subscribers whose shared results are interchangeable (same source ``share_base``,
    document, operation name and variables) hold one ``ShareGroup``: a key hashed by identity,
    so a lookup per subscriber and event hashes two small ints and a pointer."""

    __slots__ = ("__weakref__",)


class SharedResults:
    """The outcomes of the last ``size`` shared executions (see ``ResponseStream``), with what
    their keys name (the broadcast payload and the published value: their ids are in the keys,
    and pinning them keeps the ids from being reused while the entry lives)."""

    __slots__ = ("entries", "size")

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.entries: OrderedDict[Any, tuple[Outcome, Any]] = OrderedDict()

    def get(self, key: Any) -> Outcome | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: Any, outcome: Outcome, pins: Any) -> None:
        self.entries[key] = (outcome, pins)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)


class Executed:
    """A source event already executed by ``ResponseStream.direct`` but not delivered (the
    consumer could not take it then): the source queues it in the event's place, and returns it
    from ``__anext__`` in turn; ``result`` is an ``Outcome`` or an awaitable of one."""

    __slots__ = ("key", "pins", "result", "sent_at")

    def __init__(self, result: Any, sent_at: float | None, key: Any, pins: Any) -> None:
        self.result = result
        self.sent_at = sent_at
        self.key = key
        self.pins = pins


#: ``ResponseStream.direct``'s answer when the consumer took the outcome (or nobody will).
DELIVERED = object()

#: The consumer's callback for direct delivery: ``deliver(outcome)`` writes it now and returns
#: ``True``, or returns ``False`` when it cannot take it now (its client is not reading).
Deliver = Callable[[Outcome], bool]


class ResponseStream:
    """MapSourceToResponseEvent (GraphQL spec section 6.2.3.2): one ``Outcome`` per source event,
    each executed with the engine's middleware.

    ``aclose()`` closes the source stream whether or not an event was ever read (an async
    generator closed before its first step would skip its ``finally``, and a subscription whose
    connection ended while it was starting would never leave its groups). A source may expose
    ``sent_at`` (unix seconds its current event was broadcast); it is copied into the Outcome.

    Shared execution: a source may expose ``share_base`` (a hashable: what its results depend
    on besides the event) and, for its current event, ``share_key`` (a hashable naming the
    broadcast and the value it yielded, or ``None``) with ``share_pins`` (the objects whose ids
    the key holds). Subscribers of one worker whose sources give equal bases and keys and who
    run the same cached document with the same operation name and variables then share one
    execution: the first computes the ``Outcome``, the others get that very object (and so its
    JSON, encoded once). A source gives a key only where its results cannot depend on who
    subscribed beyond its base (``Subscription.share_results`` and ``result_key``).

    Direct delivery: a consumer that can write an outcome synchronously registers
    ``set_deliver(deliver)``. A source with a ``direct`` attribute (``SubscriptionStream``) is
    then handed ``self.direct``, and calls it for an event that arrives while the consumer waits
    in ``__anext__`` with nothing queued before it: the event is executed (or its shared outcome
    found) and written by ``deliver`` right there, in the broker's dispatch pass, with no task
    switch. What cannot be written at once comes back as an ``Executed`` for the source to queue,
    and ``__anext__`` returns it in order.
    """

    __slots__ = (
        "cached",
        "closed",
        "context",
        "deliver",
        "engine",
        "operation_name",
        "share_group",
        "source",
        "variables",
    )

    def __init__(
        self,
        engine: Engine,
        source: Any,
        cached: CachedDocument,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: Any,
    ) -> None:
        self.engine = engine
        self.source = source
        self.cached = cached
        self.variables = variables
        self.operation_name = operation_name
        self.context = context
        self.closed = False
        self.deliver: Deliver | None = None
        #: The engine's object for everything this subscriber's shared results depend on
        #: besides the event (``Engine.share_group``), made on first sharing.
        self.share_group: ShareGroup | None = None

    def __aiter__(self) -> ResponseStream:
        return self

    def set_deliver(self, deliver: Deliver | None) -> None:
        """Register (or, with ``None``, remove) the consumer's direct-delivery callback."""
        self.deliver = deliver
        if hasattr(self.source, "direct"):
            self.source.direct = None if deliver is None else self.direct

    def _shared_key(self, share_key: Any) -> tuple[Any, ...]:
        group = self.share_group
        if group is None:
            variables = orjson.dumps(self.variables, option=orjson.OPT_SORT_KEYS).decode()
            group = self.share_group = self.engine.share_group(
                (self.source.share_base, id(self.cached), self.operation_name, variables)
            )
        return (group, share_key)

    def _execute(self, event: Any) -> Outcome | Awaitable[Outcome]:
        return self.engine.execute(
            self.cached,
            "subscription",
            self.variables,
            self.operation_name,
            self.context,
            root_value=event,
        )

    def _finish(self, outcome: Outcome, sent_at: float | None, key: Any, pins: Any) -> Outcome:
        outcome.sent_at = sent_at
        if key is not None and "errors" not in outcome.body:
            # (Errors are formatted with this subscriber's context, e.g. its request id.)
            self.engine.shared_results.put(key, outcome, pins)
        return outcome

    def direct(self, event: Any, sent_at: float | None, share_key: Any, pins: Any) -> Any:
        """Execute ``event`` for this subscriber and hand the outcome to the consumer now.

        Called by the source only while the consumer waits in ``__anext__`` with nothing queued
        (so order is kept). Returns ``DELIVERED`` when the consumer took the outcome (or the
        stream is closed and nobody will), else an ``Executed`` for the source to queue.
        Exceptions from execution propagate to the source, as ``__anext__`` would raise them.
        """
        deliver = self.deliver
        if self.closed or deliver is None:
            return DELIVERED
        key = None
        if share_key is not None:
            group = self.share_group
            key = (group, share_key) if group is not None else self._shared_key(share_key)
            entry = self.engine.shared_results.entries.get(key)
            if entry is not None:
                shared = entry[0]
                return DELIVERED if deliver(shared) else Executed(shared, sent_at, None, None)
        result = self._execute(event)
        if not isinstance(result, Outcome):
            return Executed(result, sent_at, key, pins)  # awaited by __anext__, in order
        outcome = self._finish(result, sent_at, key, pins)
        return DELIVERED if deliver(outcome) else Executed(outcome, sent_at, None, None)

    async def __anext__(self) -> Outcome:
        if self.closed:
            raise StopAsyncIteration
        source = self.source
        try:
            event = await source.__anext__()
        except StopAsyncIteration:
            await self.aclose()
            raise
        if type(event) is Executed:
            result = event.result
            if isinstance(result, Outcome):
                return result
            return self._finish(await result, event.sent_at, event.key, event.pins)
        share_key = getattr(source, "share_key", None)
        key = None
        if share_key is not None:
            key = self._shared_key(share_key)
            shared = self.engine.shared_results.get(key)
            if shared is not None:
                return shared
        outcome = self._execute(event)
        if not isinstance(outcome, Outcome):
            outcome = await outcome
        return self._finish(
            outcome,
            getattr(source, "sent_at", None),
            key,
            None if key is None else getattr(source, "share_pins", None),
        )

    async def aclose(self) -> None:
        """Close the source stream (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.deliver = None
        closer = getattr(self.source, "aclose", None)
        if closer is not None:
            await closer()
