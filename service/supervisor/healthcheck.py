"""``graphql-service healthcheck``: is every worker slot answering ``/healthz``?

For container HEALTHCHECKs and scripts, where no curl exists: connect to each slot socket
``SOCKET_DIR/worker{k}`` for ``k`` in ``0..WORKERS-1`` (settings from the environment), send
``GET /healthz`` with a short timeout, and exit 0 when every slot answered 200; otherwise print
one line per failed slot on stderr and exit 1. This checks liveness only (the process serves);
readiness (Postgres reachable) is ``/readyz``.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import sys

from service.settings import Settings

DEFAULT_TIMEOUT_S = 2.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over a unix socket."""

    def __init__(self, path: str, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def check_slot(path: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> str | None:
    """``None`` if the worker on socket ``path`` answers ``GET /healthz`` with 200, else why not."""
    conn = UnixHTTPConnection(path, timeout_s)
    try:
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        conn.close()
    if response.status != 200:
        return f"HTTP {response.status}"
    return None


def check_all(settings: Settings, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[int, str]:
    """``{slot: reason}`` for every slot in ``0..workers-1`` that is not healthy."""
    failed = {}
    for slot in range(settings.workers):
        reason = check_slot(settings.slot_path(slot), timeout_s)
        if reason is not None:
            failed[slot] = reason
    return failed


def main_healthcheck(argv: list[str] | None = None) -> int:
    """Exit status 0 when every slot is healthy, 1 when one is not, 2 on bad settings."""
    parser = argparse.ArgumentParser(
        prog="graphql-service healthcheck",
        description="Exit 0 if every worker slot socket answers GET /healthz with 200.",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per slot")
    args = parser.parse_args([] if argv is None else argv)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"graphql-service healthcheck: {exc}", file=sys.stderr)
        return 2
    if settings.workers < 1:
        print(f"graphql-service healthcheck: WORKERS={settings.workers}", file=sys.stderr)
        return 2
    failed = check_all(settings, args.timeout)
    for slot, reason in failed.items():
        print(
            f"graphql-service healthcheck: slot {slot} ({settings.slot_path(slot)}): {reason}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main_healthcheck(sys.argv[1:]))
