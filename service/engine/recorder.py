"""What the engine and the transports report about their work, as a small interface.

The engine, the HTTP core, the WebSocket sessions and the subscription streams are given a
``Recorder`` and call it; they never import a metrics library. ``NullRecorder`` records nothing
(library use without metrics, tests). The Prometheus implementation is
``service.observability.metrics.PrometheusRecorder``.

Label values are bounded by the callers: ``transport`` is ``http`` or ``ws``; ``operation_type``
is ``query``, ``mutation``, ``subscription`` or ``unknown``; ``status`` is ``ok``, ``error``,
``rejected``, ``complete`` or ``cancelled``; ``code`` is an ``ErrorCode`` value or ``OTHER``.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullRecorder", "Recorder"]


class Recorder(Protocol):
    """Receives one call per counted event. Every method must be cheap and never raise."""

    def request(self, transport: str, operation_type: str, status: str) -> None:
        """One operation answered (``graphql_requests_total``)."""

    def duration(self, operation_type: str, name: str | None, seconds: float) -> None:
        """Time to answer one operation, in seconds (subscriptions: time to set up)."""

    def answered(
        self, transport: str, operation_type: str, status: str, name: str | None, seconds: float
    ) -> None:
        """``request`` and ``duration`` of one operation, in one call (the HTTP hot path): a
        recorder counts the same as for ``request(transport, operation_type, status)`` then
        ``duration(operation_type, name, seconds)``."""

    def error(self, code: str) -> None:
        """One GraphQL error returned, by its bounded ``extensions.code``."""

    def cache_lookup(self, hit: bool) -> None:
        """One document cache lookup."""

    def inflight(self, delta: int) -> None:
        """Operations executing now changed by ``delta`` (+1 when one starts, -1 when it ends)."""

    def websocket(self, subprotocol: str, delta: int) -> None:
        """Open WebSocket connections of ``subprotocol`` changed by ``delta``."""

    def subscriptions(self, delta: int) -> None:
        """Running subscriptions changed by ``delta``."""

    def notification_sent(self, lag_s: float | None) -> None:
        """One subscription notification written; ``lag_s`` is broadcast-to-write seconds when
        the event carried its broadcast time."""

    def notification_dropped(self) -> None:
        """One notification dropped because a subscriber's queue was full."""

    def broker_reconnected(self, gap_s: float) -> None:
        """The fanout broker reconnected after ``gap_s`` seconds without its backend."""

    def flush(self) -> None:
        """Publish what was recorded so far (the server calls it every second and on close);
        a recorder that publishes at once does nothing here."""


class NullRecorder:
    """A ``Recorder`` that records nothing."""

    __slots__ = ()

    def request(self, transport: str, operation_type: str, status: str) -> None:
        pass

    def duration(self, operation_type: str, name: str | None, seconds: float) -> None:
        pass

    def answered(
        self, transport: str, operation_type: str, status: str, name: str | None, seconds: float
    ) -> None:
        # ``request`` then ``duration``, so that a subclass counting either sees every answer.
        self.request(transport, operation_type, status)
        self.duration(operation_type, name, seconds)

    def error(self, code: str) -> None:
        pass

    def cache_lookup(self, hit: bool) -> None:
        pass

    def inflight(self, delta: int) -> None:
        pass

    def websocket(self, subprotocol: str, delta: int) -> None:
        pass

    def subscriptions(self, delta: int) -> None:
        pass

    def notification_sent(self, lag_s: float | None) -> None:
        pass

    def notification_dropped(self) -> None:
        pass

    def broker_reconnected(self, gap_s: float) -> None:
        pass

    def flush(self) -> None:
        pass
