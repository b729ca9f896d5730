"""The gunicorn worker class: one uvloop process serving slot ``k`` on ``{socket_dir}/worker{k}``.

Lifecycle (gunicorn calls these in the forked child):
1. ``load_wsgi``: create the uvloop loop (after fork), build the app, bind the slot socket
   atomically (temporary path renamed over the slot path). gunicorn sets ``booted`` only after
   this returns, so a worker is "booted" only once its socket is bound.
2. ``run``: serve; heartbeat with ``notify()``; exit when the parent (arbiter) dies.
3. SIGTERM: graceful. If the arbiter announced a reload (SIGUSR2, sent by the ``on_reload``
   hook), keep accepting until the successor has renamed its socket over the slot path, so the
   path always has a listener. Then stop accepting, finish in-flight requests within
   ``graceful_timeout`` (idle keep-alive connections answer one more request for
   ``IDLE_LINGER_S``), exit. SIGQUIT/SIGINT: stop at once.
4. HUP, USR1, TTIN, TTOU, WINCH: the arbiter's commands (reload, reopen logs, scale, stop
   daemonized workers). A worker only logs that it ignored one: the fork copied the arbiter's
   Python handlers, so ``init_signals`` first resets every signal the arbiter handles (and
   CHLD). USR1, which the arbiter forwards to its workers, has no log file to reopen: logs go
   to stderr.

Slots are assigned in the arbiter (``hooks.pre_fork``); gunicorn has no worker ids. The arbiter
serves ``/metrics`` for all workers (``service.observability.exposition``); a worker only counts
itself in ``graphql_workers_alive`` once its slot socket is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from service.protocols.codes import CloseCode
from service.settings import Settings

log = logging.getLogger("service.supervisor.worker")

#: On a graceful stop or reload, idle keep-alive connections from nginx stay open this long
#: (``Server.close``'s ``idle_linger_s``): a request nginx sends on one as the stop begins is
#: answered (with ``connection: close``) instead of meeting a closed socket.
IDLE_LINGER_S = 1.0
#: Signals meant for the arbiter that a worker receives by mistake (or, for USR1, forwarded by
#: the arbiter's log reopening): ignored until the loop runs, then a logged no-op.
STRAY_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH)
_WHY_IGNORED = {
    signal.SIGUSR1: "logs go to stderr, no file to reopen",
}


def _ignore_stray_signals() -> None:
    for sig in STRAY_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class GraphQLWorker(Worker):
    """gunicorn worker running the native transport on a unix socket per slot."""

    slot: int = 0

    def init_signals(self) -> None:
        # fork() copied the arbiter's Python handlers: in a worker they would queue signals for
        # an arbiter loop that does not run here. Start from the defaults for all of them.
        for sig in (*Arbiter.SIGNALS, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        # The loop installs the worker's handlers in _main(); until then TERM, INT and QUIT
        # stop the worker (default action), USR2 and the stray signals are ignored (the
        # default action of TTIN/TTOU would stop the process, of HUP/USR1 terminate it).
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        _ignore_stray_signals()

    def load_wsgi(self) -> None:
        import uvloop

        from service.observability.exposition import set_worker_alive
        from service.observability.logging import configure_logging
        from service.server.application import build_worker_server

        self.settings = Settings.from_env()
        self.logs = configure_logging(self.settings, slot=self.slot)
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.handover = False
        self.stop_event = asyncio.Event()
        self.quick = False
        self.server = build_worker_server(self.settings, self.slot, self)
        self.loop.run_until_complete(self.server.start())
        set_worker_alive()
        self.log.info(
            "worker slot %s listening on %s", self.slot, self.settings.slot_path(self.slot)
        )

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        finally:
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()
            # The closed loop's handlers stay installed: ignore stray signals plainly again.
            _ignore_stray_signals()
            self.logs.flush()  # log lines still waiting for the loop's next turn
        sys.exit(0)

    def _on_term(self) -> None:
        self.alive = False
        self.stop_event.set()

    def _on_quit(self) -> None:
        self.alive = False
        self.quick = True
        self.stop_event.set()

    def _on_handover(self) -> None:
        self.handover = True

    def _on_stray_signal(self, sig: signal.Signals) -> None:
        log.info(
            "worker ignored %s (%s)",
            sig.name,
            _WHY_IGNORED.get(sig, f"a command for the arbiter, pid {self.ppid}"),
            extra={"signal": sig.name},
        )

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGINT, self._on_quit)
        loop.add_signal_handler(signal.SIGQUIT, self._on_quit)
        loop.add_signal_handler(signal.SIGUSR2, self._on_handover)
        for sig in STRAY_SIGNALS:
            loop.add_signal_handler(sig, self._on_stray_signal, sig)
        interval = max(0.2, min(1.0, float(self.timeout) / 2))
        while not self.stop_event.is_set():
            self.notify()
            if os.getppid() != self.ppid:
                self.log.info("parent changed, shutting down worker slot %s", self.slot)
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_event.wait(), interval)
        if self.quick:
            await self.server.close(0)
            return
        heartbeat = asyncio.create_task(self._heartbeat(interval))
        try:
            if self.handover:
                # A reload: the successor takes new connections; this worker keeps delivering
                # to its WebSockets for the drain, then closes them with 1012, spread out.
                await self._wait_for_successor()
                await self.server.close(
                    self.settings.graceful_timeout_s,
                    websocket_drain_s=self.settings.ws_reload_drain_s,
                    websocket_spread_s=self.settings.ws_reload_spread_s,
                    websocket_code=CloseCode.ServiceRestart,
                    idle_linger_s=IDLE_LINGER_S,
                )
            else:
                await self.server.close(
                    self.settings.graceful_timeout_s, idle_linger_s=IDLE_LINGER_S
                )
        finally:
            heartbeat.cancel()

    async def _heartbeat(self, interval: float) -> None:
        """Keep telling the arbiter this worker lives while it drains."""
        while True:
            self.notify()
            await asyncio.sleep(interval)

    async def _wait_for_successor(self) -> None:
        """Keep serving until the slot path holds a successor's socket (bounded wait)."""
        path = self.settings.slot_path(self.slot)
        ours = {inode for p, inode in self.server.unix_paths if p == path}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(1.0, self.settings.graceful_timeout_s / 2)
        while loop.time() < deadline:
            try:
                if os.stat(path).st_ino not in ours:
                    return
            except FileNotFoundError:
                pass
            self.notify()
            await asyncio.sleep(0.05)  # polling the filesystem, bounded by the deadline

    def handle_exit(self, sig: int, frame: Any) -> None:  # gunicorn API; unused with loop handlers
        self._on_term()
