"""The nginx files in front of the worker slot sockets, and ``graphql-service nginx-config``.

The configuration is nginx files shipped in this package: ``graphql-service.conf`` (everything the
deployments share, included at http level) and ``nginx.dev.conf`` (the main config of the private
nginx, :mod:`service.supervisor.private_nginx`). The repository's ``nginx/`` links to both and adds
the compose and systemd entry files. What differs per host is two small files in a
``graphql-service/`` directory next to the main nginx.conf, rendered here:

- ``upstream.conf``: one ``server unix:{socket_dir}/worker{k} max_fails=0;`` per worker slot;
- ``server.conf``: the listen address, ``client_max_body_size`` and the access log.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from service.settings import Settings

CONF_DIR = Path(__file__).resolve().parent
SHARED_CONF = CONF_DIR / "graphql-service.conf"
DEV_MAIN_CONF = CONF_DIR / "nginx.dev.conf"
# Relative includes resolve against the main nginx.conf's directory; graphql-service.conf
# includes these two from there.
HOST_DIR = "graphql-service"
UPSTREAM_FILE = "upstream.conf"
SERVER_FILE = "server.conf"

VARIANTS = ("dev", "compose", "site")
DEFAULT_SOCKET_DIR = {"dev": "/tmp", "compose": "/sockets", "site": "/run/graphql-service"}
DEFAULT_LISTEN_HOST = {"dev": "127.0.0.1", "compose": "0.0.0.0", "site": "0.0.0.0"}
# dev: relative to nginx's -p prefix.
DEFAULT_ACCESS_LOG = {
    "dev": "access.log",
    "compose": "/dev/stdout",
    "site": "/var/log/nginx/graphql-service.access.log",
}
LOG_FORMAT_NAME = "graphql_service_json"
DEFAULT_MAX_BODY_BYTES = Settings().max_body_bytes
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_UNIX_PATH_BYTES = 107

# Values written into the files must not be able to end a directive or open a block.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:@+=-]+$")


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


def _listen_address(host: str, port: int) -> str:
    """``host:port`` for ``listen``, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def render_host_files(
    *,
    workers: int,
    port: int,
    variant: str = "dev",
    socket_dir: str | None = None,
    listen_host: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access_log: str | None = None,
) -> dict[str, str]:
    """``{file name: text}`` of ``upstream.conf`` and ``server.conf`` for one host.

    ``socket_dir``, ``listen_host`` and ``access_log`` default per variant. Raises
    ``ValueError`` for an unknown variant, out-of-range numbers, values unsafe in an nginx
    config, or a socket path too long for a unix socket address.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be in 1..65535, not {port}")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, not {max_body_bytes}")
    socket_dir = _check_value("socket_dir", socket_dir or DEFAULT_SOCKET_DIR[variant])
    if not socket_dir.startswith("/"):
        raise ValueError(f"socket_dir must be an absolute path, not {socket_dir!r}")
    socket_dir = socket_dir.rstrip("/")
    listen_host = listen_host or DEFAULT_LISTEN_HOST[variant]
    _check_value("listen_host", listen_host.removeprefix("[").removesuffix("]"))
    access_log = _check_value("access_log", access_log or DEFAULT_ACCESS_LOG[variant])
    longest = f"{socket_dir}/worker{workers - 1}"
    if len(longest.encode()) > MAX_UNIX_PATH_BYTES:
        raise ValueError(
            f"socket path {longest!r} is longer than {MAX_UNIX_PATH_BYTES} bytes; "
            "use a shorter socket_dir"
        )

    command = (
        f"graphql-service nginx-config --variant {variant} --workers {workers} --port {port}"
        f" --socket-dir {socket_dir or '/'} --listen-host {listen_host}"
        f" --max-body-bytes {max_body_bytes} --access-log {access_log}"
    )
    header = (
        "# Written by `graphql-service nginx-config`; do not edit. Regenerate with --out-dir"
        f" pointing here:\n#   {command}\n"
    )
    servers = "".join(
        f"server unix:{socket_dir}/worker{slot} max_fails=0;\n" for slot in range(workers)
    )
    return {
        UPSTREAM_FILE: (
            f"# The {workers} worker slot socket(s), inside `upstream graphql_workers` of"
            f" graphql-service.conf.\n{header}{servers}"
        ),
        SERVER_FILE: (
            "# Where this nginx listens, its body limit (MAX_BODY_BYTES) and access log, at the"
            f" top of\n# the server block of graphql-service.conf.\n{header}"
            f"listen {_listen_address(listen_host, port)};\n"
            f"client_max_body_size {_nginx_size(max_body_bytes)};\n"
            f"access_log {access_log} {LOG_FORMAT_NAME};\n"
        ),
    }


def write_host_files(directory: str | os.PathLike[str], files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` (from :func:`render_host_files`) into ``directory``; each replaced whole."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    written = []
    for name, text in files.items():
        path = Path(directory, name)
        partial = path.with_name(f".{name}.partial")
        partial.write_text(text, encoding="utf-8")
        partial.chmod(0o644)
        os.replace(partial, path)
        written.append(path)
    return written


def main_nginx_config(argv: list[str] | None = None) -> int:
    """``graphql-service nginx-config``: write (``--out-dir``) or print the per-host files."""
    parser = argparse.ArgumentParser(
        prog="graphql-service nginx-config",
        description=f"Write {HOST_DIR}/{UPSTREAM_FILE} and {HOST_DIR}/{SERVER_FILE}, the per-host"
        " part of the nginx config (the rest is graphql-service.conf).",
    )
    defaults = Settings()
    parser.add_argument("--variant", choices=VARIANTS, default="dev")
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument(
        "--socket-dir",
        help="directory of the worker sockets (default: /tmp, /sockets or /run/graphql-service"
        " by variant)",
    )
    parser.add_argument("--listen-host", help="default: 127.0.0.1 for dev, else 0.0.0.0")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--access-log", help="default: access.log, /dev/stdout or /var/log/nginx")
    parser.add_argument(
        "--out-dir",
        help=f"write the files there (the {HOST_DIR}/ next to nginx.conf); default: print them",
    )
    args = parser.parse_args(argv)
    try:
        files = render_host_files(
            workers=args.workers,
            port=args.port,
            variant=args.variant,
            socket_dir=args.socket_dir,
            listen_host=args.listen_host,
            max_body_bytes=args.max_body_bytes,
            access_log=args.access_log,
        )
    except ValueError as exc:
        print(f"graphql-service nginx-config: {exc}", file=sys.stderr)
        return 2
    if args.out_dir is None:
        for name, text in files.items():
            sys.stdout.write(f"# ==> {HOST_DIR}/{name} <==\n{text}")
        return 0
    for path in write_host_files(args.out_dir, files):
        print(f"wrote {path}")
    return 0
