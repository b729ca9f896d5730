"""TEMPORARY re-export while the move to service.observability.metrics lands; deleted before commit."""

from service.observability.metrics import *  # noqa: F403
from service.observability.metrics import (  # noqa: F401
    ACTIVE_SUBSCRIPTIONS,
    BROKER_RECONNECTS,
    CACHE_HITS,
    CACHE_MISSES,
    DB_POOL_IN_USE,
    DB_POOL_SIZE,
    DB_QUERY_DURATION,
    ERRORS,
    FANOUT_LAG,
    INFLIGHT,
    NOTIFICATIONS_DROPPED,
    NOTIFICATIONS_SENT,
    REQUESTS,
    WORKERS_ALIVE,
    WS_CONNECTIONS,
)
