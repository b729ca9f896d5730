"""gunicorn arbiter hooks: stable worker slots, reload handover, the metrics endpoint.

They run in the arbiter process, except ``post_fork`` (in the new worker). A slot is the lowest
``k`` in ``0..N-1`` not held by a live, non-retiring worker, so a replacement for a dead worker
takes the dead worker's slot and a HUP reload's new generation takes slots ``0..N-1`` again while
the old one drains. The arbiter serves the metrics endpoint for all workers
(``service.observability.exposition``): started once in ``when_ready``, before the first fork.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import Any

from service.settings import Settings


def pre_fork(arbiter: Any, worker: Any) -> None:
    """Assign ``worker.slot`` before the fork."""
    taken = {
        getattr(w, "slot", None)
        for w in arbiter.WORKERS.values()
        if not getattr(w, "retiring", False)
    }
    slot = 0
    while slot in taken:
        slot += 1
    worker.slot = slot
    worker.retiring = False


def post_fork(arbiter: Any, worker: Any) -> None:
    """In the new worker: close its copy of the arbiter's metrics socket, so that only the
    arbiter holds the metrics port (a worker never accepts a scrape, and a worker outliving the
    arbiter does not keep the port)."""
    server = getattr(arbiter, "metrics_server", None)
    if server is not None:
        from service.observability.exposition import close_inherited_socket

        close_inherited_socket(server)


def on_reload(arbiter: Any) -> None:
    """HUP: the current workers retire. Tell each (SIGUSR2) to keep its slot's socket until the
    successor has bound it; gunicorn then sends them SIGTERM."""
    for pid, worker in list(arbiter.WORKERS.items()):
        worker.retiring = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR2)


def child_exit(arbiter: Any, worker: Any) -> None:
    """A worker exited: drop its live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(worker.pid)
    arbiter.log.info("worker slot %s (pid %s) exited", getattr(worker, "slot", "?"), worker.pid)


def on_starting(arbiter: Any) -> None:
    """Wipe the multiprocess metrics directory so counts start from this supervisor."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def when_ready(arbiter: Any) -> None:
    """Start the metrics endpoint once, in the arbiter, before the first worker is forked."""
    from service.observability.exposition import start_metrics_server

    arbiter.metrics_server = start_metrics_server(Settings.from_env())


def on_exit(arbiter: Any) -> None:
    """The arbiter is exiting: stop the metrics endpoint and release its port."""
    server = getattr(arbiter, "metrics_server", None)
    arbiter.metrics_server = None
    if server is not None:
        from service.observability.exposition import stop_metrics_server

        stop_metrics_server(server)
