"""Prometheus metrics (prometheus-client; multiprocess mode under the supervisor).

Names follow Prometheus conventions: counters end in ``_total``, durations are ``_seconds``
histograms. Label values are bounded: ``operation_name`` is one of
``Settings.metrics_operation_names`` or ``other``; ``code`` is an ``ErrorCode`` value
or ``OTHER``; ``status`` is an HTTP status class or a WebSocket outcome.

Multiprocess mode needs ``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is first
imported; the supervisor sets it before forking. Live gauges use ``multiprocess_mode="livesum"``
so a dead worker's values disappear once ``mark_process_dead`` ran for it.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from service.engine.errors import METRIC_CODES, OTHER

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "graphql_requests",
    "GraphQL operations answered, by transport (http, ws), operation type and status.",
    ["transport", "operation_type", "status"],
)
REQUEST_DURATION = Histogram(
    "graphql_request_duration_seconds",
    "Time to answer one GraphQL operation (subscriptions: time to set up).",
    ["operation_type", "operation_name"],
    buckets=LATENCY_BUCKETS_S,
)
ERRORS = Counter("graphql_errors", "GraphQL errors returned, by extensions.code.", ["code"])
CACHE_HITS = Counter("graphql_document_cache_hits", "Document cache hits.")
CACHE_MISSES = Counter("graphql_document_cache_misses", "Document cache misses.")
INFLIGHT = Gauge(
    "graphql_inflight_operations",
    "Operations executing now.",
    multiprocess_mode="livesum",
)
WS_CONNECTIONS = Gauge(
    "graphql_websocket_connections",
    "Open WebSocket connections by subprotocol.",
    ["subprotocol"],
    multiprocess_mode="livesum",
)
ACTIVE_SUBSCRIPTIONS = Gauge(
    "graphql_active_subscriptions",
    "Subscriptions running now.",
    multiprocess_mode="livesum",
)
NOTIFICATIONS_SENT = Counter(
    "graphql_subscription_notifications_sent", "Subscription notifications written to clients."
)
NOTIFICATIONS_DROPPED = Counter(
    "graphql_subscription_notifications_dropped",
    "Subscription notifications dropped because a subscriber's queue was full.",
)
FANOUT_LAG = Histogram(
    "graphql_fanout_lag_seconds",
    "Time from broadcast() to the notification frame written to the socket.",
    buckets=LATENCY_BUCKETS_S,
)
BROKER_RECONNECTS = Counter(
    "graphql_broker_reconnects", "Reconnections of the fanout broker after a lost connection."
)
DB_POOL_SIZE = Gauge(
    "graphql_db_pool_size", "Postgres connections held by pools.", multiprocess_mode="livesum"
)
DB_POOL_IN_USE = Gauge(
    "graphql_db_pool_in_use", "Postgres connections checked out.", multiprocess_mode="livesum"
)
DB_QUERY_DURATION = Histogram(
    "graphql_db_query_duration_seconds",
    "Time for one Postgres query, including acquiring the connection.",
    buckets=LATENCY_BUCKETS_S,
)
WORKERS_ALIVE = Gauge(
    "graphql_workers_alive", "Worker processes serving now.", multiprocess_mode="livesum"
)

# Every metric family the service exports, as scraped (counters with their _total suffix).
EXPORTED_NAMES = frozenset(
    {
        "graphql_requests_total",
        "graphql_request_duration_seconds",
        "graphql_errors_total",
        "graphql_document_cache_hits_total",
        "graphql_document_cache_misses_total",
        "graphql_inflight_operations",
        "graphql_websocket_connections",
        "graphql_active_subscriptions",
        "graphql_subscription_notifications_sent_total",
        "graphql_subscription_notifications_dropped_total",
        "graphql_fanout_lag_seconds",
        "graphql_broker_reconnects_total",
        "graphql_db_pool_size",
        "graphql_db_pool_in_use",
        "graphql_db_query_duration_seconds",
        "graphql_workers_alive",
    }
)


def bounded_operation_name(name: str | None, allowed: tuple[str, ...]) -> str:
    """Label value for ``operation_name``: the name if allowed, else ``other``."""
    if name and name in allowed:
        return name
    return "other"


class PrometheusRecorder:
    """Records into the metrics above. Implements ``service.engine.recorder.Recorder``, the
    database's ``service.db.DatabaseMetrics`` and the broker's ``on_reconnect`` callback.

    Labelled children are cached: ``labels()`` takes a lock and builds a key on every call, and
    this path runs for every request and frame. ``graphql_errors_total`` starts at zero for every
    ``ErrorCode`` (and ``OTHER``), so dashboards see each code before it first occurs.
    """

    def __init__(self, operation_names: tuple[str, ...] = ()) -> None:
        self.operation_names = operation_names
        self._requests: dict[tuple[str, str, str], Any] = {}
        self._durations: dict[tuple[str, str], Any] = {}
        self._errors: dict[str, Any] = {code: ERRORS.labels(code) for code in METRIC_CODES}
        self._other = self._errors[OTHER]
        self._websockets: dict[str, Any] = {}

    # --- service.engine.recorder.Recorder ---------------------------------------------------
    def request(self, transport: str, operation_type: str, status: str) -> None:
        key = (transport, operation_type, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = REQUESTS.labels(*key)
        child.inc()

    def duration(self, operation_type: str, name: str | None, seconds: float) -> None:
        key = (operation_type, bounded_operation_name(name, self.operation_names))
        child = self._durations.get(key)
        if child is None:
            child = self._durations[key] = REQUEST_DURATION.labels(*key)
        child.observe(seconds)

    def error(self, code: str) -> None:
        self._errors.get(code, self._other).inc()

    def cache_lookup(self, hit: bool) -> None:
        (CACHE_HITS if hit else CACHE_MISSES).inc()

    def inflight(self, delta: int) -> None:
        INFLIGHT.inc(delta)

    def websocket(self, subprotocol: str, delta: int) -> None:
        child = self._websockets.get(subprotocol)
        if child is None:
            child = self._websockets[subprotocol] = WS_CONNECTIONS.labels(subprotocol)
        child.inc(delta)

    def subscriptions(self, delta: int) -> None:
        ACTIVE_SUBSCRIPTIONS.inc(delta)

    def notification_sent(self, lag_s: float | None) -> None:
        NOTIFICATIONS_SENT.inc()
        if lag_s is not None:
            FANOUT_LAG.observe(max(0.0, lag_s))

    def notification_dropped(self) -> None:
        NOTIFICATIONS_DROPPED.inc()

    # --- service.db.DatabaseMetrics ------------------------------------------------------------
    def pool_changed(self, size_delta: int, in_use_delta: int) -> None:
        """Connections held by a pool, and checked out of it, changed by these deltas."""
        DB_POOL_SIZE.inc(size_delta)
        DB_POOL_IN_USE.inc(in_use_delta)

    def query_observed(self, seconds: float) -> None:
        """One Postgres statement took ``seconds``, acquiring the connection included."""
        DB_QUERY_DURATION.observe(seconds)

    # --- the broker's on_reconnect -------------------------------------------------------------
    def broker_reconnected(self, gap_s: float) -> None:
        """The fanout broker reconnected after a gap of ``gap_s`` seconds."""
        BROKER_RECONNECTS.inc()

    # --- the worker ----------------------------------------------------------------------------
    def worker_alive(self) -> None:
        """Count this process in ``graphql_workers_alive`` (a livesum gauge: it drops out once
        the supervisor runs ``mark_process_dead`` for this pid)."""
        WORKERS_ALIVE.set(1)
