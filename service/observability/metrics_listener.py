"""The Prometheus listener: ``GET /metrics`` on ``metrics_host:metrics_port`` in every worker.

Every worker binds the same port with ``SO_REUSEPORT`` and the kernel spreads scrapes across
them. Under the supervisor (``PROMETHEUS_MULTIPROC_DIR`` set) the answer comes from a registry
holding only a ``MultiProcessCollector``, which reads every worker's files: whichever worker
answers, it answers for all. HTTP/1.1 is the native transport's (httptools); this module only
routes. The exposition is rendered in a thread so a scrape never stalls the worker's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from service import metrics
from service.engine.http import HTTPRequest, HTTPResponse
from service.server.native import HTTPProtocol
from service.settings import Settings

log = logging.getLogger("service.metrics")

_TEXT = [("content-type", "text/plain; charset=utf-8")]


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: all workers' files in multiprocess mode, else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


class MetricsApp:
    """Answers ``GET /metrics``; 404 elsewhere, 405 for other methods on ``/metrics``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def handle(self, request: HTTPRequest) -> HTTPResponse | Awaitable[HTTPResponse]:
        if request.path != "/metrics":
            return HTTPResponse(404, list(_TEXT), b"Not found; metrics are served on /metrics.\n")
        if request.method != "GET":
            return HTTPResponse(405, [*_TEXT, ("allow", "GET")], b"Method not allowed; use GET.\n")
        return asyncio.get_running_loop().run_in_executor(None, self.render)

    def render(self) -> HTTPResponse:
        return HTTPResponse(
            200, [("content-type", CONTENT_TYPE_LATEST)], generate_latest(self.registry)
        )


async def start_metrics_listener(settings: Settings) -> asyncio.AbstractServer | None:
    """Serve ``/metrics`` on ``settings.metrics_host:settings.metrics_port`` (``SO_REUSEPORT``).

    Returns the listening server (``close()`` it on shutdown), or ``None`` after logging a
    warning when ``metrics_port`` is 0 or the port cannot be bound: metrics never stop a worker.
    """
    if settings.metrics_port == 0:
        log.warning("metrics listener disabled (METRICS_PORT=0)")
        return None
    try:
        app = MetricsApp(metrics_registry())
    except (OSError, ValueError) as exc:
        log.warning("metrics listener not started: %s", exc)
        return None
    connections: set[HTTPProtocol] = set()
    loop = asyncio.get_running_loop()
    try:
        return await loop.create_server(
            lambda: HTTPProtocol(app, settings, connections),
            host=settings.metrics_host,
            port=settings.metrics_port,
            reuse_port=True,
        )
    except (OSError, ValueError) as exc:
        log.warning(
            "metrics listener could not bind %s:%s: %s",
            settings.metrics_host,
            settings.metrics_port,
            exc,
        )
        return None


def set_worker_alive() -> None:
    """Count this process in ``graphql_workers_alive`` (a livesum gauge: it drops out once the
    supervisor runs ``mark_process_dead`` for this pid)."""
    metrics.WORKERS_ALIVE.set(1)
