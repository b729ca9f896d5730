"""gunicorn arbiter hooks: stable worker slots, reload handover, the metrics endpoint.

They run in the arbiter process, except ``post_fork`` (in the new worker). A slot is the lowest
``k`` in ``0..N-1`` not held by a live, non-retiring worker, so a replacement for a dead worker
takes the dead worker's slot and a HUP reload's new generation takes slots ``0..N-1`` again while
the old one drains. The arbiter serves the metrics endpoint for all workers
(``service.observability.exposition``): started once in ``when_ready``, before the first fork.

Under systemd (``Type=notify``) the supervisor tells systemd it is ready only once every slot
``0..N-1`` has a worker whose socket is bound (``SlotReadiness``), not when the arbiter has booted
as gunicorn itself would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import threading
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
    readiness = getattr(arbiter, "readiness", None)
    worker.readiness_fd = None if readiness is None else readiness.fd_for_worker()


def post_worker_init(worker: Any) -> None:
    """In the worker, once its slot socket is bound (gunicorn calls this after ``load_wsgi``):
    report the slot to the arbiter's ``SlotReadiness``, if it is still waiting."""
    fd = getattr(worker, "readiness_fd", None)
    if fd is not None:
        worker.readiness_fd = None
        with contextlib.suppress(OSError):
            os.write(fd, f"{worker.slot}\n".encode())
        os.close(fd)


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
    """Wipe the multiprocess metrics directory so counts start from this supervisor; under
    systemd, take readiness over from gunicorn (``SlotReadiness``)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)
    arbiter.readiness = SlotReadiness.take_over(arbiter.num_workers, arbiter.log)


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


def sd_notify(address: str, state: str) -> None:
    """Send ``state`` (``READY=1``, ``STATUS=...``) to systemd's notification socket."""
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


class SlotReadiness:
    """``READY=1`` to systemd once every slot ``0..N-1`` has a worker serving it.

    gunicorn's arbiter sends ``READY=1`` as soon as it has booted, before it forks a worker.
    ``take_over`` (in ``on_starting``, which runs before that) removes ``NOTIFY_SOCKET`` from the
    environment, so that call does nothing and the workers do not inherit the variable. Each
    worker forked while this waits gets the write end of a pipe (``post_fork``) and writes its
    slot number to it once its socket is bound (``post_worker_init``); a thread of the arbiter
    reads them and notifies systemd when all N slots have reported. Workers forked after that
    (respawns, reloads) report nothing.
    """

    def __init__(self, address: str, workers: int, log: Any) -> None:
        self.address = address
        self.workers = workers
        self.log = log
        self.read_fd, write_fd = os.pipe()
        self.write_fd: int | None = write_fd
        self.thread = threading.Thread(target=self._wait, name="systemd-readiness", daemon=True)

    @classmethod
    def take_over(cls, workers: int, log: Any) -> SlotReadiness | None:
        """Start waiting if systemd expects a notification (``NOTIFY_SOCKET`` is set)."""
        address = os.environ.pop("NOTIFY_SOCKET", None)
        if not address:
            return None
        readiness = cls(address, workers, log)
        readiness.thread.start()
        return readiness

    def fd_for_worker(self) -> int | None:
        """In a newly forked worker: the pipe's write end while the arbiter still waits (the
        read end, inherited too, is closed), else ``None``."""
        write_fd = self.write_fd
        if write_fd is None:
            return None
        # This worker's copy of the arbiter as it was at the fork: the thread clears write_fd
        # before it closes either end, so both were still open when it was forked.
        os.close(self.read_fd)
        return write_fd

    def _wait(self) -> None:
        serving: set[int] = set()
        pending = b""
        while not serving.issuperset(range(self.workers)):
            chunk = os.read(self.read_fd, 256)
            if not chunk:  # cannot happen while the arbiter holds the write end
                return
            *lines, pending = (pending + chunk).split(b"\n")
            serving.update(int(line) for line in lines if line.strip())
        write_fd, self.write_fd = self.write_fd, None
        if write_fd is not None:
            os.close(write_fd)
        os.close(self.read_fd)
        try:
            sd_notify(self.address, f"READY=1\nSTATUS=serving {self.workers} worker slots")
        except OSError as exc:
            self.log.warning("could not notify systemd at %s: %s", self.address, exc)
            return
        self.log.info("every worker slot serving: READY=1 sent to systemd")
