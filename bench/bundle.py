"""The bundle as shipped against strawberry, both behind the same nginx configuration.

Targets, each with its own private nginx (``PrivateNginx``: the shipped nginx files) in front of
one server process, the peers' one-field schema (``bench.peers``):

- ``shipped``: the supervisor with one worker, default logging (one JSON line per request) and
  metrics on;
- ``quiet``: the same with ``LOG_LEVEL=warning`` and ``METRICS_ENABLED=false``, to price the
  logs and metrics;
- ``strawberry``: strawberry's ASGI app under uvicorn (uvloop, httptools) on the same kind of
  unix socket, when strawberry and uvicorn are installed (the ``bench`` extra).

Rounds are interleaved (each target measured once per round), so drift on a shared machine
hits all of them alike. Server CPU per request is read from ``/proc`` for the server's
processes (not nginx, not wrk): utime + stime over the measured requests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

from bench.procs import children_cpu_ticks
from bench.wrk import WrkResult

SCHEMA_APP = "bench.peers.graphene_schema:schema"


@dataclass
class Target:
    key: str
    label: str
    url: str
    pids: list[int]
    results: list[tuple[WrkResult, float]] = field(default_factory=list)  # (wrk, cpu us/req)

    def cpu_ticks(self) -> int:
        return children_cpu_ticks(self.pids)


def strawberry_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("strawberry", "uvicorn"))


@contextlib.contextmanager
def strawberry_behind_nginx(port: int) -> Iterator[tuple[str, list[int]]]:
    """uvicorn serving strawberry on ``<dir>/worker0`` with a private nginx on ``port``."""
    from service.supervisor.private_nginx import PrivateNginx
    from support.polling import poll_until

    directory = tempfile.mkdtemp(prefix="gsb", dir="/tmp")
    os.chmod(directory, 0o755)
    sock = os.path.join(directory, "worker0")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.peers.strawberry_app:app",
            "--uds",
            sock,
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    nginx = PrivateNginx(
        workers=1, port=port, socket_dir=directory, prefix_dir=os.path.join(directory, "nginx")
    )
    try:
        poll_until(lambda: os.path.exists(sock), timeout_s=30, what="uvicorn's socket")
        os.chmod(sock, 0o666)
        nginx.start()
        nginx.wait_ready(15)
        yield f"http://127.0.0.1:{port}/graphql", [proc.pid]
    finally:
        nginx.stop(10)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            os.unlink(sock)
