"""Prometheus exposition under the supervisor: one HTTP server, in the arbiter.

The arbiter serves prometheus-client's WSGI exposition app (``make_wsgi_app``) from the
stdlib's threading WSGI server in a daemon thread on ``metrics_host:metrics_port``, as
prometheus-client's ``start_http_server`` does, but without the reverse DNS lookup of the
bind address that the stdlib server makes when it binds (``socket.getfqdn``): where the
resolver does not answer, that lookup waits out its timeouts, seconds, before the endpoint and
the arbiter's readiness come up. Its registry holds only a ``MultiProcessCollector``
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
import socket
import socketserver
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from service.settings import Settings

log = logging.getLogger("service.metrics")


def multiprocess_registry(path: str | None = None) -> CollectorRegistry:
    """A registry holding only a ``MultiProcessCollector`` over ``path`` (default:
    ``PROMETHEUS_MULTIPROC_DIR``). Raises ``ValueError`` when that is not a directory."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    return registry


class _QuietHandler(WSGIRequestHandler):
    """No access line on stderr per scrape."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per scrape (daemon threads: none outlives the arbiter), bound without looking
    the host's name up: ``server_name`` is only the ``SERVER_NAME`` of the WSGI environ, which
    the exposition app never reads, so the bind address stands in for it."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family  # read when the socket is made, in the base ``__init__``
        super().__init__(address, _QuietHandler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


def serve_exposition(host: str, port: int, registry: CollectorRegistry) -> WSGIServer:
    """Serve ``registry``'s exposition (``GET /metrics``, any path) on ``host:port`` from a
    daemon thread; IPv6 when ``host`` is an IPv6 address. Raises ``OSError`` when the address
    cannot be bound (or resolved)."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    server = _MetricsServer((str(sockaddr[0]), port), family)
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


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
        server = serve_exposition(settings.metrics_host, settings.metrics_port, registry)
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
