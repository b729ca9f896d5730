"""Run the real stack in tests: the gunicorn supervisor (a child process) and a private nginx.

``Stack`` owns a short temporary socket directory, a free TCP port for nginx, a metrics
directory and a throwaway database; ``stop()`` reaps every child and removes the directory.
Nothing here sleeps to wait: every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from service.settings import Settings
from service.supervisor.healthcheck import UnixHTTPConnection
from service.supervisor.private_nginx import PrivateNginx
from support import dbutil
from support.polling import poll_until

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """:func:`support.polling.poll_until` under its old name and positional spelling, kept for
    the callers not moved yet (``tests/e2e/test_bundle.py``, ``test_deploy_artifacts.py``,
    ``test_observability.py``). New code calls ``poll_until``."""
    return poll_until(check, timeout_s=timeout_s, what=what, interval_s=interval_s)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry))
    return out


class Stack:
    """Supervisor + private nginx on a throwaway database."""

    def __init__(
        self, *, workers: int = 2, app: str | None = None, env: dict[str, str] | None = None
    ):
        self.workers = workers
        self.dir = tempfile.mkdtemp(prefix="gs", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.socket_dir = os.path.join(self.dir, "s")
        os.makedirs(self.socket_dir)
        os.chmod(self.socket_dir, 0o755)
        self.metrics_dir = os.path.join(self.dir, "m")
        self.port = free_port()
        self.metrics_port = free_port()
        self.database_url = dbutil.fresh_url()
        self.log_path = os.path.join(self.dir, "supervisor.log")
        self.env = {
            **os.environ,
            "WORKERS": str(workers),
            "SOCKET_DIR": self.socket_dir,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "METRICS_PORT": str(self.metrics_port),
            "GRACEFUL_TIMEOUT_S": "10",
            **({"APP": app} if app else {}),
            **(env or {}),
        }
        self.settings = Settings.from_env(self.env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.nginx: PrivateNginx | None = None
        self._log: Any = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Stack:
        from service.db.migrations import ensure_database, migrate_sync

        ensure_database(self.database_url)
        migrate_sync(self.database_url)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.supervisor.cli", "serve"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        poll_until(
            lambda: len(self.slot_pids()) == self.workers, timeout_s=30, what="every slot to answer"
        )
        self.nginx = PrivateNginx(
            workers=self.workers,
            port=self.port,
            socket_dir=self.socket_dir,
            prefix_dir=os.path.join(self.dir, "nginx"),
        )
        self.nginx.start()
        self.nginx.wait_ready(15)
        return self

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop(10)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            # Reap stragglers of the process group (workers of a killed arbiter).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
        with contextlib.suppress(Exception):
            dbutil.drop_database(self.database_url)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            print(self.log())
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")
        return ""

    # --- clients ------------------------------------------------------------------------------
    def http(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        """A keep-alive connection to nginx."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def slot(self, k: int, timeout: float = 10.0) -> UnixHTTPConnection:
        """A connection straight to worker slot ``k``'s socket."""
        return UnixHTTPConnection(self.settings.slot_path(k), timeout)

    def graphql(
        self, query: str, variables: dict[str, Any] | None = None, **headers: str
    ) -> dict[str, Any]:
        conn = self.http()
        try:
            status, _, body = request(
                conn, "POST", "/graphql", {"query": query, "variables": variables}, headers
            )
        finally:
            conn.close()
        assert status == 200, (status, body)
        result: dict[str, Any] = json.loads(body)
        return result

    def health_of(self, k: int) -> dict[str, Any]:
        conn = self.slot(k, 2.0)
        try:
            status, _, body = request(conn, "GET", "/healthz")
        finally:
            conn.close()
        assert status == 200
        info: dict[str, Any] = json.loads(body)
        return info

    def slot_pids(self) -> dict[int, int]:
        """``{slot: pid}`` for every slot whose socket answers now."""
        out = {}
        for k in range(self.workers):
            with contextlib.suppress(
                OSError, AssertionError, http.client.HTTPException, ValueError
            ):
                info = self.health_of(k)
                out[info["slot"]] = info["pid"]
        return out

    def worker_pids(self) -> set[int]:
        assert self.proc is not None
        return children_of(self.proc.pid)


@contextlib.contextmanager
def running_stack(**kwargs: Any) -> Iterator[Stack]:
    stack = Stack(**kwargs)
    with stack:
        yield stack
