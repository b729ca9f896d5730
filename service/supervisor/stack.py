"""``graphql-service run``: the development stack in the foreground.

Steps: apply migrations; start the supervisor (``graphql-service serve``) as a child process;
wait until every slot socket accepts; start a private nginx (own prefix, ``daemon off``) on
``127.0.0.1:$PORT``; print one line with the URL. On Ctrl-C or SIGTERM, or when either child dies:
stop nginx gracefully, TERM the supervisor (which drains its workers), remove leftover slot
sockets, and exit. Nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from service.settings import Settings


def _connectable(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def wait_for_slots(settings: Settings, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll until every slot socket accepts; raise if the supervisor exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    paths = [settings.slot_path(k) for k in range(settings.workers)]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the supervisor exited with status {proc.returncode} during start")
        if all(_connectable(p) for p in paths):
            return
        time.sleep(0.05)
    raise TimeoutError(f"workers did not bind {paths} within {timeout_s:g} s")


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout_s: float) -> None:
    """Send ``sig``, wait up to ``timeout_s``, then SIGKILL; always reap."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_stack() -> int:
    from service.db.migrations import ensure_database, migrate_sync
    from service.supervisor.private_nginx import PrivateNginx

    settings = Settings.from_env()
    ensure_database(settings.database_url)
    migrate_sync(settings.database_url)
    os.makedirs(settings.socket_dir, exist_ok=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    supervisor = subprocess.Popen(
        [sys.executable, "-m", "service.supervisor.cli", "serve"],
        env=os.environ.copy(),
        start_new_session=True,
    )
    prefix = tempfile.mkdtemp(prefix="graphql-service-nginx-")
    nginx = PrivateNginx(
        workers=settings.workers,
        port=settings.port,
        socket_dir=settings.socket_dir,
        prefix_dir=prefix,
        max_body_bytes=settings.max_body_bytes,
    )
    status = 0
    try:
        wait_for_slots(settings, supervisor, 60.0)
        nginx.start()
        nginx.wait_ready(15.0)
        print(f"graphql-service ready on http://127.0.0.1:{settings.port}/graphql", flush=True)
        while not stop.wait(0.5):
            if supervisor.poll() is not None:
                print("graphql-service: the supervisor exited; stopping", file=sys.stderr)
                status = 1
                break
            if nginx.exited() is not None:
                print("graphql-service: nginx exited; stopping", file=sys.stderr)
                status = 1
                break
    except (RuntimeError, TimeoutError) as exc:
        print(f"graphql-service: {exc}", file=sys.stderr)
        status = 1
    finally:
        nginx.stop(10.0)
        stop_process(supervisor, signal.SIGTERM, settings.graceful_timeout_s + 10)
        for k in range(settings.workers):
            path = settings.slot_path(k)
            if os.path.exists(path) and not _connectable(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        shutil.rmtree(prefix, ignore_errors=True)
    return status
