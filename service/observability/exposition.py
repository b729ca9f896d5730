"""Prometheus exposition under the supervisor: one HTTP server, in the arbiter.

The arbiter runs prometheus-client's own exposition server (``start_http_server``, a daemon
thread) on ``metrics_host:metrics_port``. Its registry holds only a ``MultiProcessCollector``
over ``PROMETHEUS_MULTIPROC_DIR``, which reads the files every worker writes, so one scrape
answers for all workers; the arbiter itself records no metrics. The hooks in
``service.supervisor.hooks`` start the server once (``when_ready``), close the forked copy of
its socket in every worker (``post_fork``) and shut it down when the arbiter exits
(``on_exit``). Metrics never stop the service: a disabled or unbindable port is a log line.

This module does not import the metric definitions (``service.observability.metrics``) at import
time: defining them would create the arbiter's own multiprocess files.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from service.settings import Settings

log = logging.getLogger("service.metrics")


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry holding only a ``MultiProcessCollector`` over ``path`` (default:
    ``PROMETHEUS_MULTIPROC_DIR``). Raises ``ValueError`` when that is not a directory."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return registry


def start_metrics_server(settings: Settings, path: str | None = None) -> WSGIServer | None:
    """Serve the multiprocess exposition on ``settings.metrics_host:settings.metrics_port``.

    Returns the server (pass it to ``close_inherited_socket`` after a fork and to
    ``stop_metrics_server`` on exit), or ``None`` when ``metrics_port`` is 0 or the server
    cannot start (logged as a warning).
    """
    if settings.metrics_port == 0:
        log.info("metrics endpoint disabled (METRICS_PORT=0)")
        return None
    address = f"{settings.metrics_host}:{settings.metrics_port}"
    try:
        registry = multiprocess_registry(path)
        server, _thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=registry
        )
    except (OSError, ValueError) as exc:
        log.warning("metrics endpoint not started on %s: %s", address, exc)
        return None
    log.info("metrics endpoint serving http://%s/metrics", address)
    return server


def close_inherited_socket(server: WSGIServer) -> None:
    """In a process forked from the one running ``server``: drop the copy of its listening
    socket (the thread that serves it exists only in the parent). Never call it in the parent."""
    server.socket.close()


def stop_metrics_server(server: WSGIServer) -> None:
    """Stop the serving thread and release the port."""
    server.shutdown()
    server.server_close()
    log.info("metrics endpoint stopped")


def set_worker_alive() -> None:
    """Count this worker in ``graphql_workers_alive`` (a livesum gauge: it drops out once the
    arbiter runs ``mark_process_dead`` for this pid)."""
    from service.observability.metrics import WORKERS_ALIVE

    WORKERS_ALIVE.set(1)
