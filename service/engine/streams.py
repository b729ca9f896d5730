"""Operations answered as a stream: GraphQL over SSE and Apollo's multipart subscriptions.

The HTTP core returns an ``HTTPStream`` (``service.engine.http``: status, headers and an async
iterator of body chunks)
for a request whose Accept header asks for ``text/event-stream`` or for ``multipart/mixed`` with
``subscriptionSpec`` (``service.protocols.streams``). The transport writes the chunks as they
come (chunked transfer coding), waits while its client does not read, and closes the iterator
when the client goes away: that cancels the operation, and a subscription leaves its groups and
runs ``unsubscribed``, as over WebSocket.

``StreamedOperation`` runs the operation: a query or mutation is one ``next`` and the end; a
subscription is one ``next`` per event until its source ends (or the server unsubscribes it).
While no event comes, a heartbeat goes out every ``heartbeat_s`` seconds (SSE comments,
multipart ``{}`` parts), which keeps the stream alive through nginx's and load balancers' read
timeouts. Metrics use the transport label ``sse`` or ``multipart``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
from graphql import GraphQLError

from service.engine import errors as codes
from service.engine.cache import CachedDocument
from service.engine.executor import Engine, Outcome
from service.protocols.streams import SSE, Framing

__all__ = ["StreamedOperation", "failure_chunks"]

log = logging.getLogger("service.streams")


async def _close(stream: Any) -> None:
    try:
        await stream.aclose()
    except Exception:
        log.exception("closing a subscription stream failed")


def _count_errors(engine: Engine, body: dict[str, Any]) -> None:
    for item in body.get("errors") or ():
        engine.recorder.error(codes.error_code(item))


async def failure_chunks(
    engine: Engine, framing: Framing, outcome: Outcome
) -> AsyncIterator[bytes]:
    """A request error reported inside the stream (graphql-sse: the user agent would fail a
    connection answered with a 4xx): one ``next`` with the errors, then the end."""
    _count_errors(engine, outcome.body)
    engine.recorder.request(framing.kind, outcome.operation_type, "rejected")
    yield framing.start() + framing.next(orjson.dumps(outcome.body)) + framing.end()


class StreamedOperation:
    """One prepared operation run for a streaming response; ``chunks()`` is its body."""

    def __init__(
        self,
        engine: Engine,
        framing: Framing,
        cached: CachedDocument,
        operation_type: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        label: str | None,
        context: Any,
        t0: float,
        heartbeat_s: float,
    ) -> None:
        self.engine = engine
        self.framing = framing
        self.cached = cached
        self.operation_type = operation_type
        self.variables = variables
        self.operation_name = operation_name
        self.label = label
        self.context = context
        self.t0 = t0
        self.heartbeat_s = heartbeat_s if heartbeat_s > 0 else None

    def _internal(self, exc: BaseException) -> bytes:
        codes.call_handler(exc, self.context, self.engine.exception_handler)
        errors = [codes.masked(self.context)]
        _count_errors(self.engine, {"errors": errors})
        return self.framing.fatal(orjson.dumps(errors))

    async def chunks(self) -> AsyncIterator[bytes]:
        engine, framing, recorder = self.engine, self.framing, self.engine.recorder
        kind = self.operation_type
        status = "cancelled"
        try:
            yield framing.start()
            recorder.inflight(1)
            try:
                if kind != "subscription":
                    result = engine.execute(
                        self.cached, kind, self.variables, self.operation_name, self.context
                    )
                    started: Any = result if isinstance(result, Outcome) else await result
                else:
                    started = await engine.subscribe(
                        self.cached, self.variables, self.operation_name, self.context
                    )
            except Exception as exc:
                status = "error"
                yield self._internal(exc) + framing.end()
                return
            finally:
                recorder.inflight(-1)
            recorder.duration(kind, self.label, time.perf_counter() - self.t0)
            if isinstance(started, Outcome):
                # A query's or mutation's result, or a subscription that could not start.
                _count_errors(engine, started.body)
                if started.request_error or kind == "subscription":
                    status = "rejected"
                else:
                    status = "error" if started.body.get("errors") else "ok"
                yield framing.next(orjson.dumps(started.body)) + framing.end()
                return
            ended = "complete"
            events = self._events(started)
            try:
                async for chunk in events:
                    if chunk is None:
                        ended = "error"
                        continue
                    yield chunk
            finally:
                # Also when this generator is closed at a yield: the subscription ends now.
                await events.aclose()
                await _close(started)  # idempotent; covers a generator closed before it ran
            status = ended
            yield framing.end()
        finally:
            recorder.request(framing.kind, kind, status)

    async def _events(self, stream: Any) -> AsyncGenerator[bytes | None, None]:
        """The subscription's events as chunks, heartbeats while idle; ``None`` reports that
        the source failed (its error chunk came just before)."""
        framing, recorder = self.framing, self.engine.recorder
        task = asyncio.current_task()
        pending: asyncio.Future[Any] | None = None
        try:
            if task is not None and task.cancelling():
                # The client left while the subscription was starting, and code below us (a
                # broker's I/O) swallowed the cancellation: end here, closing the stream.
                raise asyncio.CancelledError
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(stream.__anext__())
                done, _ = await asyncio.wait((pending,), timeout=self.heartbeat_s)
                if not done:
                    yield framing.heartbeat()
                    continue
                finished, pending = pending, None
                try:
                    outcome = finished.result()
                except StopAsyncIteration:
                    return
                except GraphQLError as exc:
                    errors = [exc.formatted]
                    _count_errors(self.engine, {"errors": errors})
                    if framing.kind == SSE:
                        yield framing.next(orjson.dumps({"errors": errors}))
                    else:
                        yield framing.next(orjson.dumps({"data": None, "errors": errors}))
                    yield None
                    return
                except Exception as exc:
                    yield self._internal(exc)
                    yield None
                    return
                _count_errors(self.engine, outcome.body)
                yield framing.next(orjson.dumps(outcome.body))
                sent_at = outcome.sent_at
                recorder.notification_sent(None if sent_at is None else time.time() - sent_at)
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.wait((pending,))
            await _close(stream)
