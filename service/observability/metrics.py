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

from bisect import bisect_left, bisect_right
from operator import itemgetter
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


class _Observations:
    """Histogram observations not yet handed to prometheus-client: their sum and the count per
    bucket (the first bucket whose upper bound is at least the value, as prometheus-client
    stores them)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.total += value
        self.counts[bisect_left(self.bounds, value)] += 1

    def flush_into(self, child: Any) -> None:
        """Add these observations to a prometheus-client histogram child, as that many
        ``observe`` calls would. Uses the child's ``_sum`` and ``_buckets``: prometheus-client
        (0.20 to 0.26) has no batch API; ``tests/unit/test_metrics_batching.py`` checks that the
        exposition equals the one ``observe`` per value gives."""
        if not any(self.counts):
            return
        child._sum.inc(self.total)
        for index, count in enumerate(self.counts):
            if count:
                child._buckets[index].inc(count)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0


_BOUNDS = (*LATENCY_BUCKETS_S, float("inf"))
# Of an ``answered`` entry ``(transport, operation_type, status, name, seconds)``:
_KIND = itemgetter(0, 1, 2, 3)
_SECONDS = itemgetter(4)


class PrometheusRecorder:
    """Records into the metrics above. Implements ``service.engine.recorder.Recorder``, the
    database's ``service.db.DatabaseMetrics`` and the broker's ``on_reconnect`` callback.

    The hot path only adds to plain in-process counters; ``flush()`` hands them to
    prometheus-client, whose multiprocess mode writes an mmapped file (and checks the pid) on
    every ``inc``/``observe``: measured, about a fifth of a ``{ hello }`` request's CPU when
    done per request. The server calls ``flush()`` every second and when it stops, so scraped
    values lag by at most a second. ``graphql_errors_total`` starts at zero for every
    ``ErrorCode`` (and ``OTHER``), so dashboards see each code before it first occurs.
    """

    #: Most (operation type, operation name as given) pairs remembered with their pending
    #: observations: names outside ``operation_names`` are the client's to choose.
    NAMES_REMEMBERED = 1024

    def __init__(self, operation_names: tuple[str, ...] = ()) -> None:
        self.operation_names = operation_names
        self._requests: dict[tuple[str, str, str], int] = {}
        self._durations: dict[tuple[str, str], _Observations] = {}
        # (operation type, name as given) -> the pending observations of its bounded label.
        self._by_name: dict[tuple[str, str | None], _Observations] = {}
        self._errors: dict[str, int] = {}
        self._error_children: dict[str, Any] = {code: ERRORS.labels(code) for code in METRIC_CODES}
        self._websockets: dict[str, int] = {}
        self._counts: dict[str, int] = dict.fromkeys(_PLAIN, 0)
        self._cache_hits = 0  # apart from ``_counts``: one per request
        self._lag = _Observations(_BOUNDS)
        self._queries = _Observations(_BOUNDS)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # ``answered`` calls not yet counted: (transport, operation type, status, name, seconds)
        self._answered: list[tuple[str, str, str, str | None, float]] = []

    def _child(self, metric: Any, key: tuple[str, ...]) -> Any:
        child = self._children.get((metric, key))
        if child is None:
            child = self._children[(metric, key)] = metric.labels(*key)
        return child

    # --- service.engine.recorder.Recorder ---------------------------------------------------
    # ``request``, ``duration`` and ``cache_lookup`` run for every request: each is a dict
    # lookup and an addition, nothing else (``_Observations.add`` inlined).
    def request(self, transport: str, operation_type: str, status: str) -> None:
        key = (transport, operation_type, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1

    def duration(self, operation_type: str, name: str | None, seconds: float) -> None:
        pending = self._by_name.get((operation_type, name))
        if pending is None:
            pending = self._pending_for(operation_type, name)
        pending.total += seconds
        pending.counts[bisect_left(_BOUNDS, seconds)] += 1

    #: Most ``answered`` calls kept before they are counted.
    ANSWERED_MAX = 256

    def answered(
        self, transport: str, operation_type: str, status: str, name: str | None, seconds: float
    ) -> None:
        """Kept as one tuple and counted with the others of its batch (at ``ANSWERED_MAX`` or
        the next ``flush``): measured in ``bench/hotpath.py``, counting each in the request's
        own turn, where this code and its dicts are cold, cost about 1.4 times as much (2.0
        against 1.4 µs per request for all the metrics of a ``{ hello }``)."""
        answered = self._answered
        answered.append((transport, operation_type, status, name, seconds))
        if len(answered) >= self.ANSWERED_MAX:
            self._count_answered()

    def _count_answered(self) -> None:
        answered, self._answered = self._answered, []
        if not answered:
            return
        kind = _KIND(answered[0])
        if all(map(kind.__eq__, map(_KIND, answered))):
            self._count_one_kind(kind, answered)
            return
        for transport, operation_type, status, name, seconds in answered:
            self.request(transport, operation_type, status)
            self.duration(operation_type, name, seconds)

    def _count_one_kind(
        self, kind: tuple[str, str, str, str | None], answered: list[tuple[Any, ...]]
    ) -> None:
        """Count a batch whose requests are all of one ``kind`` (transport, operation type,
        status, name), the usual batch, without a Python step per request: one count, the
        seconds sorted once and each bucket's share found by bisection. Measured (best of 20
        timeit runs, batches of 256): 0.11 µs a request against 0.22 for the loop."""
        transport, operation_type, status, name = kind
        key = (transport, operation_type, status)
        self._requests[key] = self._requests.get(key, 0) + len(answered)
        pending = self._by_name.get((operation_type, name)) or self._pending_for(
            operation_type, name
        )
        seconds = sorted(map(_SECONDS, answered))
        pending.total = sum(seconds, pending.total)
        counts = pending.counts
        below = 0  # seconds in the buckets before this one
        for index, bound in enumerate(_BOUNDS):
            upto = bisect_right(seconds, bound)
            if upto > below:
                counts[index] += upto - below
                below = upto
            if below == len(seconds):
                return
        counts[0] += len(seconds) - below  # not comparable (NaN): where ``bisect_left`` puts it

    def _pending_for(self, operation_type: str, name: str | None) -> _Observations:
        key = (operation_type, bounded_operation_name(name, self.operation_names))
        pending = self._durations.get(key)
        if pending is None:
            pending = self._durations[key] = _Observations(_BOUNDS)
        if len(self._by_name) < self.NAMES_REMEMBERED:
            self._by_name[(operation_type, name)] = pending
        return pending

    def error(self, code: str) -> None:
        if code not in self._error_children:
            code = OTHER
        self._errors[code] = self._errors.get(code, 0) + 1

    def cache_lookup(self, hit: bool) -> None:
        if hit:
            self._cache_hits += 1
        else:
            self._counts["cache_misses"] += 1

    def inflight(self, delta: int) -> None:
        self._counts["inflight"] += delta

    def websocket(self, subprotocol: str, delta: int) -> None:
        self._websockets[subprotocol] = self._websockets.get(subprotocol, 0) + delta

    def subscriptions(self, delta: int) -> None:
        self._counts["subscriptions"] += delta

    def notification_sent(self, lag_s: float | None) -> None:
        self._counts["sent"] += 1
        if lag_s is not None:
            self._lag.add(max(0.0, lag_s))

    def notification_dropped(self) -> None:
        self._counts["dropped"] += 1

    def broker_reconnected(self, gap_s: float) -> None:
        """The fanout broker reconnected after a gap of ``gap_s`` seconds."""
        self._counts["reconnects"] += 1

    # --- service.db.DatabaseMetrics ------------------------------------------------------------
    def pool_changed(self, size_delta: int, in_use_delta: int) -> None:
        """Connections held by a pool, and checked out of it, changed by these deltas."""
        self._counts["pool_size"] += size_delta
        self._counts["pool_in_use"] += in_use_delta

    def query_observed(self, seconds: float) -> None:
        """One Postgres statement took ``seconds``, acquiring the connection included."""
        self._queries.add(seconds)

    # --- the worker ----------------------------------------------------------------------------
    def worker_alive(self) -> None:
        """Count this process in ``graphql_workers_alive`` (a livesum gauge: it drops out once
        the supervisor runs ``mark_process_dead`` for this pid)."""
        WORKERS_ALIVE.set(1)

    def flush(self) -> None:
        """Hand everything recorded since the last flush to prometheus-client."""
        if self._answered:
            self._count_answered()
        requests, self._requests = self._requests, {}
        for request_key, count in requests.items():
            self._child(REQUESTS, request_key).inc(count)
        for duration_key, pending in self._durations.items():
            pending.flush_into(self._child(REQUEST_DURATION, duration_key))
        errors, self._errors = self._errors, {}
        for code, count in errors.items():
            self._error_children[code].inc(count)
        websockets, self._websockets = self._websockets, {}
        for subprotocol, delta in websockets.items():
            if delta:
                self._child(WS_CONNECTIONS, (subprotocol,)).inc(delta)
        counts = self._counts
        counts["cache_hits"] += self._cache_hits
        self._cache_hits = 0
        for name, metric in _PLAIN.items():
            value = counts[name]
            if value:
                metric.inc(value)
                counts[name] = 0
        self._lag.flush_into(FANOUT_LAG)
        self._queries.flush_into(DB_QUERY_DURATION)


#: The unlabelled counters and gauges the recorder batches, by its name for them.
_PLAIN: dict[str, Any] = {
    "cache_hits": CACHE_HITS,
    "cache_misses": CACHE_MISSES,
    "inflight": INFLIGHT,
    "subscriptions": ACTIVE_SUBSCRIPTIONS,
    "sent": NOTIFICATIONS_SENT,
    "dropped": NOTIFICATIONS_DROPPED,
    "pool_size": DB_POOL_SIZE,
    "pool_in_use": DB_POOL_IN_USE,
    "reconnects": BROKER_RECONNECTS,
}
