"""gunicorn arbiter hooks: stable worker slots, reload handover, metrics cleanup.

They run in the arbiter process. A slot is the lowest ``k`` in ``0..N-1`` not held by a live,
non-retiring worker, so a replacement for a dead worker takes the dead worker's slot and a HUP
reload's new generation takes slots ``0..N-1`` again while the old one drains.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import Any


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
