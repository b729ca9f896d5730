"""A private, foreground nginx in front of the worker slot sockets (``make run``, the tests).

``PrivateNginx`` lays out a prefix directory the way nginx.dev.conf expects it: ``nginx.conf`` and
``graphql-service.conf`` link to the files shipped in :mod:`service.supervisor.nginx`, and
``graphql-service/`` holds this instance's upstream and server files. pid, logs and temp files
stay in that directory; nothing is read from /etc/nginx.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from service.supervisor.nginx import (
    DEFAULT_MAX_BODY_BYTES,
    DEV_MAIN_CONF,
    HOST_DIR,
    SHARED_CONF,
    render_host_files,
    write_host_files,
)

# Twice nginx.dev.conf's worker_connections, like nginx.compose.conf: one descriptor per
# connection plus up to one temp file each for a buffered body or response.
WORKER_RLIMIT_NOFILE = 65536
_CAP_SYS_RESOURCE = 24


def nginx_binary() -> str:
    """Path of the nginx executable: on PATH, else /usr/sbin/nginx."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("nginx not found on PATH nor in /usr/sbin")
    return found


def _may_raise_hard_limits() -> bool:
    """Whether a child of this process running as root may raise its hard limits."""
    if os.geteuid() != 0:
        return False
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def attainable_nofile(wanted: int = WORKER_RLIMIT_NOFILE) -> int:
    """``wanted``, or the most nginx's workers can set when that is less.

    A worker applies worker_rlimit_nofile before it drops root; beyond the hard limit it
    inherits, that takes CAP_SYS_RESOURCE (and stays under /proc/sys/fs/nr_open).
    """
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard
    if _may_raise_hard_limits():
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            ceiling = wanted
    if ceiling == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, ceiling)


def _root_worker_user() -> str | None:
    """When running as root, an unprivileged ``user group`` for nginx's worker processes."""
    if os.geteuid() != 0:
        return None
    for name in ("www-data", "nobody"):
        try:
            entry = pwd.getpwnam(name)
            group = grp.getgrgid(entry.pw_gid).gr_name
        except KeyError:
            continue
        return f"{name} {group}"
    return None


def _link(target: Path, link: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(target, link)


class PrivateNginx:
    """A foreground nginx with nginx.dev.conf, owned by this process.

    ``start()`` lays out ``prefix_dir``, checks it with ``nginx -t`` and launches nginx in its
    own process group; ``wait_ready()`` returns once nginx wrote its pid file (written after its
    listening sockets are bound) and accepts TCP connections; ``exited()`` tells whether it
    died; ``stop()`` asks for a graceful stop, escalates, and reaps it. When running as root,
    nginx's worker processes run as www-data (or nobody): worker sockets must be connectable by
    that user and ``prefix_dir`` traversable (``start()`` adds o+x to it).
    """

    def __init__(
        self,
        *,
        workers: int,
        port: int,
        socket_dir: str,
        prefix_dir: str,
        listen_host: str = "127.0.0.1",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.prefix_dir = os.path.abspath(prefix_dir)
        self.listen_host = listen_host
        self.port = port
        self.conf_path = os.path.join(self.prefix_dir, "nginx.conf")
        self.pid_path = os.path.join(self.prefix_dir, "nginx.pid")
        self.access_log_path = os.path.join(self.prefix_dir, "access.log")
        self.host_dir = os.path.join(self.prefix_dir, HOST_DIR)
        # nginx.dev.conf leaves these two main-context directives to the command line.
        self.rlimit_nofile = attainable_nofile()
        self.worker_user = _root_worker_user()
        self._host_files = render_host_files(
            workers=workers,
            port=port,
            variant="dev",
            socket_dir=socket_dir,
            listen_host=listen_host,
            max_body_bytes=max_body_bytes,
            access_log=self.access_log_path,
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def exited(self) -> int | None:
        """nginx's exit status once it has exited; ``None`` while it runs or before ``start()``."""
        return None if self._proc is None else self._proc.poll()

    def _command(self, *extra: str) -> list[str]:
        main = f"worker_rlimit_nofile {self.rlimit_nofile};"
        if self.worker_user is not None:
            main += f" user {self.worker_user};"
        return [
            nginx_binary(),
            "-e",
            "stderr",
            "-p",
            self.prefix_dir,
            "-c",
            self.conf_path,
            "-g",
            main,
            *extra,
        ]

    def start(self) -> None:
        """Lay out the prefix, check it, and launch nginx. Raises ``RuntimeError`` if invalid."""
        if self._proc is not None:
            raise RuntimeError("this PrivateNginx was already started")
        os.makedirs(self.prefix_dir, mode=0o755, exist_ok=True)
        if os.geteuid() == 0:
            mode = os.stat(self.prefix_dir).st_mode & 0o7777
            os.chmod(self.prefix_dir, mode | 0o011)
        _link(DEV_MAIN_CONF, self.conf_path)
        _link(SHARED_CONF, os.path.join(self.prefix_dir, SHARED_CONF.name))
        write_host_files(self.host_dir, self._host_files)
        check = subprocess.run(
            self._command("-t", "-q"), capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected {self.conf_path}:\n{check.stderr.strip()}")
        # `nginx -t` leaves a pid file of its own; readiness waits for the real one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.pid_path)
        self._proc = subprocess.Popen(self._command(), start_new_session=True)

    def _pid_file_is_ours(self) -> bool:
        try:
            with open(self.pid_path, encoding="ascii") as f:
                return f.read().strip() == str(self.pid)
        except (FileNotFoundError, ValueError):
            return False

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until nginx accepts connections on (listen_host, port).

        Raises ``RuntimeError`` if nginx exits first and ``TimeoutError`` at the deadline.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError("PrivateNginx.start() was not called")
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with status {proc.returncode} before accepting connections"
                    " (its error log is on stderr)"
                )
            # The pid file appears only after nginx bound its sockets, so a connect that
            # succeeds then reached this nginx, not whatever else held the port before.
            if self._pid_file_is_ours():
                try:
                    with socket.create_connection((self.listen_host, self.port), timeout=0.5):
                        return
                except OSError:
                    pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"nginx did not accept connections on {self.listen_host}:{self.port} "
                    f"within {timeout_s} s"
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(0.02, remaining))

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Stop nginx: SIGQUIT (graceful), then SIGTERM, then SIGKILL to its process group.

        Returns its exit status (``None`` if it was never started). Safe to call twice.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            for sig, wait_s in (
                (signal.SIGQUIT, timeout_s),
                (signal.SIGTERM, min(timeout_s, 5.0)),
            ):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                try:
                    proc.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if proc.poll() is None:
            # Its own process group (start_new_session): the workers go with the master.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5.0)
        return proc.returncode

    def __enter__(self) -> PrivateNginx:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
