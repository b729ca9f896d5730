"""nginx in front of the worker sockets: config rendering, a private dev nginx, and its CLI.

One upstream server per worker slot (``{socket_dir}/worker{k}``); a respawned worker re-binds
the same path, so the upstream list never changes while the service runs. Three variants:

- ``dev``: a complete nginx.conf for a private, foreground nginx that keeps its pid, logs and
  temp files under a prefix directory and reads nothing from /etc/nginx (``PrivateNginx``).
- ``compose``: a complete nginx.conf for the official nginx image (which runs
  ``nginx -g 'daemon off;'`` itself); logs go to stdout and stderr.
- ``site``: an http-level snippet (log format, maps, upstream, server) for /etc/nginx/conf.d in
  the systemd layout, where the workers' sockets live in /run/graphql-service.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import TracebackType

from service.settings import Settings

VARIANTS = ("dev", "compose", "site")
UPSTREAM_NAME = "graphql_workers"
LOG_FORMAT_NAME = "graphql_service_json"

DEFAULT_SOCKET_DIR = {"dev": "/tmp", "compose": "/sockets", "site": "/run/graphql-service"}
DEFAULT_LISTEN_HOST = {"dev": "127.0.0.1", "compose": "0.0.0.0", "site": "0.0.0.0"}
SITE_LOG_DIR = "/var/log/nginx"
DEFAULT_MAX_BODY_BYTES = Settings().max_body_bytes

# Idle timeout of proxied connections, WebSockets included. It must exceed the server's
# WebSocket keepalive interval (Settings.ws_keepalive_s) so a quiet but healthy subscription is
# never cut, and the operation timeout (Settings.operation_timeout_s) so a slow query is answered
# by the app rather than by nginx.
PROXY_IDLE_TIMEOUT_S = 75
# How long nginx keeps an idle pooled connection to a worker. Shorter than the app's keep-alive
# timeout (Settings.keepalive_timeout_s) so nginx closes idle connections first and never sends
# a request on a connection the worker is closing at that moment.
UPSTREAM_KEEPALIVE_TIMEOUT_S = 60
UPSTREAM_KEEPALIVE_CONNECTIONS = 64
WORKER_CONNECTIONS = 4096
# A graceful stop (SIGQUIT) waits for open connections; WebSockets never end on their own.
WORKER_SHUTDOWN_TIMEOUT_S = 10
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_UNIX_PATH_BYTES = 107

# Values interpolated into the config must not be able to end a directive or open a block.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:@+=-]+$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*( [A-Za-z0-9_][A-Za-z0-9_.-]*)?$")

# Every temp path nginx may create; a private nginx must not fall back to /var/lib/nginx.
_TEMP_PATHS = (
    ("client_body_temp_path", "client_body_temp"),
    ("proxy_temp_path", "proxy_temp"),
    ("fastcgi_temp_path", "fastcgi_temp"),
    ("uwsgi_temp_path", "uwsgi_temp"),
    ("scgi_temp_path", "scgi_temp"),
)


def _nginx_size(n_bytes: int) -> str:
    """An nginx size value: ``1m``, ``512k`` or plain bytes."""
    if n_bytes % (1024 * 1024) == 0:
        return f"{n_bytes // (1024 * 1024)}m"
    if n_bytes % 1024 == 0:
        return f"{n_bytes // 1024}k"
    return str(n_bytes)


def _check_value(what: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ValueError(f"{what} {value!r} has characters that are not safe in an nginx config")
    return value


def _under(prefix: str | None, name: str) -> str:
    """``name`` under ``prefix``, or bare (nginx resolves it against ``-p``) without one."""
    return name if prefix is None else f"{prefix.rstrip('/')}/{name}"


def _listen_address(host: str, port: int) -> str:
    """``host:port`` for ``listen``, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def _regenerate_command(
    *,
    variant: str,
    workers: int,
    port: int,
    socket_dir: str,
    listen_host: str,
    max_body_bytes: int,
    prefix: str | None,
    user: str | None,
) -> str:
    parts = [
        "graphql-service nginx-config",
        f"--variant {variant}",
        f"--workers {workers}",
        f"--port {port}",
        f"--socket-dir {socket_dir}",
        f"--listen-host {listen_host}",
        f"--max-body-bytes {max_body_bytes}",
    ]
    if prefix is not None:
        parts.append(f"--prefix {prefix}")
    if user is not None:
        parts.append(f"--user '{user}'")
    return " ".join(parts)


def _log_format() -> list[str]:
    """The JSON access log format (http level)."""
    return [
        "# One JSON object per request; request_id joins this line to the app's log lines.",
        f"log_format {LOG_FORMAT_NAME} escape=json",
        '    \'{"time":"$time_iso8601","request_id":"$req_id",\'',
        '    \'"remote_addr":"$remote_addr","method":"$request_method",\'',
        '    \'"uri":"$request_uri","status":$status,"bytes_sent":$body_bytes_sent,\'',
        '    \'"request_time":$request_time,"upstream":"$upstream_addr",\'',
        '    \'"upstream_status":"$upstream_status",\'',
        '    \'"upstream_response_time":"$upstream_response_time",\'',
        '    \'"user_agent":"$http_user_agent"}\';',
    ]


def _maps_and_upstream(*, workers: int, socket_dir: str) -> list[str]:
    """The maps and the upstream of worker slot sockets (http level)."""
    lines = [
        "# WebSocket upgrades through pooled upstream connections: a plain request sends an",
        "# empty Connection header (nginx then omits it, so the connection to the worker stays",
        '# in the keepalive pool); an upgrade request sends "Connection: upgrade".',
        "map $http_upgrade $connection_upgrade {",
        "    default upgrade;",
        "    '' '';",
        "}",
        "",
        "# X-Request-ID: the client's id when it sent a sane one, else nginx's random $request_id.",
        "map $http_x_request_id $req_id {",
        '    "~^[A-Za-z0-9._:+/=-]{1,128}$" $http_x_request_id;',
        "    default $request_id;",
        "}",
        "",
        "# One server per worker slot. least_conn suits long-lived WebSockets. A dead worker's",
        "# socket refuses (or is missing), nginx passes the request to the next slot",
        "# (proxy_next_upstream). max_fails=0: a slot is never marked down, because during a",
        "# HUP reload every slot sees one failed connection at about the same moment and",
        "# resting them would leave no live upstream; a refused unix connect costs microseconds.",
        f"upstream {UPSTREAM_NAME} {{",
        "    least_conn;",
    ]
    for slot in range(workers):
        lines.append(f"    server unix:{socket_dir}/worker{slot} max_fails=0;")
    lines += [
        "    # Idle connections to the workers kept per nginx worker process; needs",
        "    # proxy_http_version 1.1 and the empty Connection header above.",
        f"    keepalive {UPSTREAM_KEEPALIVE_CONNECTIONS};",
        "    # Shorter than the app's keep-alive timeout, so nginx closes idle connections first.",
        f"    keepalive_timeout {UPSTREAM_KEEPALIVE_TIMEOUT_S}s;",
        "}",
    ]
    return lines


def _server(
    *,
    workers: int,
    port: int,
    listen_host: str,
    max_body_bytes: int,
    access_log: str | None,
) -> list[str]:
    """The server block (indented 4)."""
    proxied = f"proxy_pass http://{UPSTREAM_NAME};"
    lines = [
        "server {",
        f"    listen {_listen_address(listen_host, port)};",
        "    server_tokens off;",
        f"    client_max_body_size {_nginx_size(max_body_bytes)};",
    ]
    if access_log is not None:
        lines.append(f"    access_log {access_log} {LOG_FORMAT_NAME};")
    lines += [
        "",
        "    # Compress JSON answers worth compressing, also for requests that came via a proxy.",
        "    gzip on;",
        "    gzip_types application/json application/graphql-response+json;",
        "    gzip_min_length 1024;",
        "    gzip_proxied any;",
        "    gzip_vary on;",
        "",
        "    # Exactly one X-Request-ID on every answer, nginx's own error pages included.",
        "    proxy_hide_header X-Request-ID;",
        "    add_header X-Request-ID $req_id always;",
        "",
        "    proxy_http_version 1.1;",
        "    proxy_set_header Host $host;",
        "    proxy_set_header X-Real-IP $remote_addr;",
        "    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "    proxy_set_header X-Forwarded-Proto $scheme;",
        "    proxy_set_header X-Request-ID $req_id;",
        "    proxy_set_header Upgrade $http_upgrade;",
        "    proxy_set_header Connection $connection_upgrade;",
        "",
        "    # Retries. A refused or missing socket (a dead worker) is retried on the next slot",
        "    # even for POST, because nothing was sent. non_idempotent also retries a POST whose",
        "    # request was written to a connection that then failed: mostly a pooled connection",
        "    # the worker closed at that instant (graceful reload); the price is that a worker",
        "    # dying in the middle of a mutation lets nginx replay it on another worker. Never add",
        "    # `timeout` here: a request that timed out may have executed, and may still be",
        "    # executing. Request bodies stay buffered (proxy_request_buffering on) so a retry",
        "    # can resend them. At most one try per slot.",
        "    proxy_next_upstream error non_idempotent;",
        f"    proxy_next_upstream_tries {workers};",
        "    proxy_connect_timeout 5s;",
        "    # Idle limits; WebSockets carry a server keepalive far more often than this.",
        f"    proxy_read_timeout {PROXY_IDLE_TIMEOUT_S}s;",
        f"    proxy_send_timeout {PROXY_IDLE_TIMEOUT_S}s;",
        "",
        "    # Metrics are served on their own listener, never to the public.",
        "    location = /metrics {",
        "        return 404;",
        "    }",
        "    # Queries and mutations (POST, GET) and subscriptions (WebSocket upgrade).",
        "    location /graphql {",
        f"        {proxied}",
        "    }",
        "    location = /healthz {",
        f"        {proxied}",
        "    }",
        "    location = /readyz {",
        f"        {proxied}",
        "    }",
        "    location / {",
        "        return 404;",
        "    }",
        "}",
    ]
    return lines


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line if line else "" for line in lines]


def render_nginx_config(
    *,
    workers: int,
    port: int,
    socket_dir: str | None = None,
    listen_host: str | None = None,
    variant: str = "dev",
    prefix: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    user: str | None = None,
) -> str:
    """Render the nginx config for ``workers`` slot sockets in ``socket_dir``.

    ``socket_dir`` and ``listen_host`` default per variant (``DEFAULT_SOCKET_DIR``,
    ``DEFAULT_LISTEN_HOST``). ``prefix`` is where pid, logs and temp files go: for ``dev``
    without it they are relative paths that nginx resolves against its ``-p`` prefix; for
    ``compose`` without it nginx keeps the image's defaults; for ``site`` it only moves the
    access log (from /var/log/nginx). ``user`` adds a ``user`` directive (full configs only).

    Raises ``ValueError`` for an unknown variant, out-of-range numbers, values that are unsafe
    to interpolate, or a socket path too long for a unix socket address.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, not {port}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, not {max_body_bytes}")
    socket_dir = DEFAULT_SOCKET_DIR[variant] if socket_dir is None else socket_dir
    listen_host = DEFAULT_LISTEN_HOST[variant] if listen_host is None else listen_host
    socket_dir = _check_value("socket_dir", socket_dir).rstrip("/") or "/"
    if not socket_dir.startswith("/"):
        raise ValueError(f"socket_dir must be an absolute path, not {socket_dir!r}")
    _check_value("listen_host", listen_host.removeprefix("[").removesuffix("]"))
    if prefix is not None:
        _check_value("prefix", prefix)
        if not prefix.startswith("/"):
            raise ValueError(f"prefix must be an absolute path, not {prefix!r}")
    if user is not None:
        if variant == "site":
            raise ValueError("user belongs to the main nginx.conf, not to a site snippet")
        if not _SAFE_USER.match(user):
            raise ValueError(f"user {user!r} is not 'name' or 'name group'")
    longest = f"{socket_dir.rstrip('/')}/worker{workers - 1}"
    if len(longest.encode()) > MAX_UNIX_PATH_BYTES:
        raise ValueError(
            f"socket path {longest!r} is longer than {MAX_UNIX_PATH_BYTES} bytes; "
            "use a shorter socket_dir"
        )
    socket_dir = socket_dir.rstrip("/")

    command = _regenerate_command(
        variant=variant,
        workers=workers,
        port=port,
        socket_dir=socket_dir or "/",
        listen_host=listen_host,
        max_body_bytes=max_body_bytes,
        prefix=prefix,
        user=user,
    )
    header = [
        f"# nginx for graphql-service, variant {variant!r}: {workers} worker slot socket(s).",
        "# Rendered by service/supervisor/nginx.py; do not edit, regenerate with:",
        f"#   {command}",
    ]
    upstream = _maps_and_upstream(workers=workers, socket_dir=socket_dir)
    server = _server(
        workers=workers,
        port=port,
        listen_host=listen_host,
        max_body_bytes=max_body_bytes,
        access_log=(
            f"{prefix or SITE_LOG_DIR}/graphql-service.access.log" if variant == "site" else None
        ),
    )

    if variant == "site":
        header += [
            "# Install as /etc/nginx/conf.d/graphql-service.conf (it is included inside http {}).",
            f"# The worker sockets in {socket_dir or '/'} must be connectable by the nginx user",
            "# (www-data): the directory traversable, the sockets world-writable.",
        ]
        return "\n".join([*header, "", *_log_format(), "", *upstream, "", *server]) + "\n"

    main: list[str] = [] if user is None else [f"user {user};"]
    http_top = [
        "types {",
        "    application/json json;",
        "}",
        "default_type application/octet-stream;",
    ]
    if variant == "dev":
        header += [
            "# A private, foreground nginx: it reads nothing from /etc/nginx and writes nothing to",
            "# /var/log/nginx. pid, logs and temp files go under the prefix directory, e.g.:",
            "#   mkdir -p /tmp/graphql-nginx &&",
            '#   nginx -e stderr -p /tmp/graphql-nginx -c "$PWD/nginx/nginx.dev.conf"',
        ]
        main += [
            "daemon off;",
            "master_process on;",
            "worker_processes auto;",
            f"worker_shutdown_timeout {WORKER_SHUTDOWN_TIMEOUT_S}s;",
            f"pid {_under(prefix, 'nginx.pid')};",
            "error_log stderr;",
        ]
        http_top.append(f"access_log {_under(prefix, 'access.log')} {LOG_FORMAT_NAME};")
        http_top += [f"{directive} {_under(prefix, name)};" for directive, name in _TEMP_PATHS]
    else:  # compose
        header += [
            "# Mount as /etc/nginx/nginx.conf in the official nginx image, which starts",
            "# nginx -g 'daemon off;' itself. The sockets volume is mounted at the same path in",
            "# the app and nginx containers. List exactly the app's WORKERS slots: a missing",
            "# slot gets no traffic, an extra one costs a failed connect now and then.",
        ]
        main += [
            "worker_processes auto;",
            "worker_rlimit_nofile 8192;",
            f"worker_shutdown_timeout {WORKER_SHUTDOWN_TIMEOUT_S}s;",
            "error_log stderr;",
        ]
        http_top.append(f"access_log /dev/stdout {LOG_FORMAT_NAME};")
        if prefix is not None:  # else the image's pid and temp paths
            main.append(f"pid {_under(prefix, 'nginx.pid')};")
            http_top += [f"{directive} {_under(prefix, name)};" for directive, name in _TEMP_PATHS]

    lines = [
        *header,
        "",
        *main,
        "",
        "events {",
        f"    worker_connections {WORKER_CONNECTIONS};",
        "}",
        "",
        "http {",
        *_indent(_log_format()),
        "",
        *_indent(http_top),
        "",
        *_indent(upstream),
        "",
        *_indent(server),
        "}",
    ]
    return "\n".join(lines) + "\n"


def nginx_binary() -> str:
    """Path of the nginx executable: on PATH, else /usr/sbin/nginx."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError("nginx not found on PATH nor in /usr/sbin")
    return found


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


class PrivateNginx:
    """A foreground nginx with the dev config, owned by this process.

    ``start()`` renders ``prefix_dir/nginx.conf``, checks it with ``nginx -t`` and launches
    nginx in its own process group; ``wait_ready()`` returns once nginx wrote its pid file
    (written after its listening sockets are bound) and accepts TCP connections; ``stop()``
    asks for a graceful stop, escalates, and reaps it. When running as root, nginx's worker
    processes run as www-data (or nobody): worker sockets must be connectable by that user and
    ``prefix_dir`` traversable (``start()`` adds o+x to it).
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
        self._config = render_nginx_config(
            workers=workers,
            port=port,
            socket_dir=socket_dir,
            listen_host=listen_host,
            variant="dev",
            prefix=self.prefix_dir,
            max_body_bytes=max_body_bytes,
            user=_root_worker_user(),
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _command(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-e", "stderr", "-p", self.prefix_dir, "-c", self.conf_path, *extra]

    def start(self) -> None:
        """Write the config, check it, and launch nginx. Raises ``RuntimeError`` if invalid."""
        if self._proc is not None:
            raise RuntimeError("this PrivateNginx was already started")
        os.makedirs(self.prefix_dir, mode=0o755, exist_ok=True)
        if os.geteuid() == 0:
            mode = os.stat(self.prefix_dir).st_mode & 0o7777
            os.chmod(self.prefix_dir, mode | 0o011)
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self._config)
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


def main_nginx_config(argv: list[str] | None = None) -> int:
    """``graphql-service nginx-config``: print the rendered config to stdout."""
    parser = argparse.ArgumentParser(
        prog="graphql-service nginx-config",
        description="Print an nginx config for the worker slot sockets.",
    )
    defaults = Settings()
    parser.add_argument("--variant", choices=VARIANTS, default="dev")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument(
        "--socket-dir",
        default=None,
        help="directory of the worker sockets (default: /tmp, /sockets or /run/graphql-service"
        " by variant)",
    )
    parser.add_argument(
        "--listen-host", default=None, help="default: 127.0.0.1 for dev, else 0.0.0.0"
    )
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--prefix", default=None, help="directory for pid, logs and temp files")
    parser.add_argument("--user", default=None, help="nginx worker 'user [group]' (full configs)")
    args = parser.parse_args(argv)
    try:
        text = render_nginx_config(
            workers=args.workers,
            port=args.port,
            socket_dir=args.socket_dir,
            listen_host=args.listen_host,
            variant=args.variant,
            prefix=args.prefix,
            max_body_bytes=args.max_body_bytes,
            user=args.user,
        )
    except ValueError as exc:
        print(f"graphql-service nginx-config: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0
