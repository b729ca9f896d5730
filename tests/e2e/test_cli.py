"""The command line: `run` (what `make run` starts), preflight refusals, `migrate`, `token`."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from service.auth import Verifier
from service.settings import Settings
from support import dbutil
from support.polling import poll_until
from support.stack import REDIS_URL, children_of, free_port

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "service.supervisor.cli"]


def read_line_until(proc: subprocess.Popen[bytes], needle: bytes, timeout_s: float) -> bytes:
    """Poll the child's stdout (read without blocking) for a whole line containing ``needle``;
    fail at once if the child closes its stdout first, or after ``timeout_s``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    output = bytearray()
    closed = False

    def found() -> list[bytes]:
        """``[line]`` once a line has ``needle``, ``[b""]`` once stdout is closed, else ``[]``."""
        nonlocal closed
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 65536):
                output.extend(chunk)
            closed = True
        for line in output.splitlines(keepends=True):
            if needle in line and (line.endswith(b"\n") or closed):
                return [bytes(line)]
        return [b""] if closed else []

    try:
        [line] = poll_until(found, timeout_s=timeout_s, what=f"a line with {needle!r}")
    except TimeoutError as exc:
        output_text = output.decode(errors="replace")
        raise AssertionError(f"no {needle!r} within {timeout_s} s; output: {output_text}") from exc
    if not line:
        raise AssertionError(f"exited before {needle!r}; output: {output.decode(errors='replace')}")
    return line


def test_run_serves_through_nginx_and_stops_cleanly() -> None:
    tmp = tempfile.mkdtemp(prefix="gs", dir="/tmp")
    os.chmod(tmp, 0o755)
    port = free_port()
    db = dbutil.fresh_url()
    env = {
        **os.environ,
        "DATABASE_URL": db,
        "REDIS_URL": REDIS_URL,
        "SOCKET_DIR": tmp,
        "METRICS_PORT": str(free_port()),
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, "metrics"),
    }
    proc = subprocess.Popen(
        [*CLI, "run", "--workers", "2", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        line = read_line_until(proc, b"ready on", 60)
        assert f"http://127.0.0.1:{port}/graphql".encode() in line
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request(
            "POST",
            "/graphql",
            body=b'{"query":"{ hello }"}',
            headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"},
        )
        resp = conn.getresponse()
        body = resp.read()
        if resp.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert resp.status == 200 and body == b'{"data":{"hello":"Hello, world!"}}'
        conn.close()
        workers = {pid for child in children_of(proc.pid) for pid in children_of(child)}
        assert len(workers) >= 2  # the supervisor's workers (and nginx's)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        # Nothing left: no process of the session, no slot socket.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 0)
            raise AssertionError("processes of the stack are still running")
        assert not [n for n in os.listdir(tmp) if n.startswith("worker")]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        dbutil.drop_database(db)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize(
    ("redis_url", "message"),
    [("", "needs REDIS_URL"), ("redis://127.0.0.1:1/0", "needs a reachable Redis")],
)
def test_several_workers_without_redis_refuse_to_start(redis_url: str, message: str) -> None:
    tmp = tempfile.mkdtemp(prefix="gs", dir="/tmp")
    try:
        result = subprocess.run(
            [*CLI, "serve", "--workers", "2"],
            env={
                **os.environ,
                "REDIS_URL": redis_url,
                "SOCKET_DIR": tmp,
                "PROMETHEUS_MULTIPROC_DIR": os.path.join(tmp, "m"),
            },
            capture_output=True,
            timeout=60,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_migrate_creates_the_database_and_is_idempotent() -> None:
    db = dbutil.fresh_url()
    env = {**os.environ, "DATABASE_URL": db, "PROMETHEUS_MULTIPROC_DIR": ""}
    try:
        first = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert dbutil.database_exists(db)
        second = subprocess.run([*CLI, "migrate"], env=env, capture_output=True, timeout=60)
        assert second.returncode == 0 and b"up to date" in second.stdout
    finally:
        dbutil.drop_database(db)


def test_token_command_prints_a_verifiable_token() -> None:
    secret = "s" * 40
    result = subprocess.run(
        [*CLI, "token", "--sub", "alice", "--name", "Alice", "--ttl", "60"],
        env={**os.environ, "JWT_SECRET": secret},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    claims = Verifier(Settings(jwt_secret=secret)).verify(result.stdout.decode().strip())
    assert claims["sub"] == "alice" and claims["name"] == "Alice"
    assert 0 < claims["exp"] - time.time() <= 61
    missing = subprocess.run(
        [*CLI, "token", "--sub", "alice"],
        env={**os.environ, "JWT_SECRET": ""},
        capture_output=True,
        timeout=60,
    )
    assert missing.returncode != 0 and b"JWT_SECRET" in missing.stderr


def test_nginx_config_command_writes_the_per_host_files() -> None:
    out_dir = tempfile.mkdtemp(prefix="gsc", dir="/tmp")
    try:
        argv = [*CLI, "nginx-config", "--workers", "3", "--port", "9999", "--out-dir", out_dir]
        result = subprocess.run(argv, capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr
        with open(os.path.join(out_dir, "upstream.conf")) as f:
            assert "server unix:/tmp/worker2 max_fails=0;" in f.read()
        with open(os.path.join(out_dir, "server.conf")) as f:
            assert "listen 127.0.0.1:9999;" in f.read()
        bad = subprocess.run(
            [*CLI, "nginx-config", "--workers", "0"], capture_output=True, timeout=60
        )
        assert bad.returncode == 2 and b"workers must be at least 1" in bad.stderr
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def test_make_run_starts_the_stack_command_with_local_redis() -> None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "WORKERS", "PORT")}
    result = subprocess.run(
        ["make", "-n", "-s", "run"], cwd=root, env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "REDIS_URL=redis://127.0.0.1:6379/0" in text
    assert "graphql-service run --workers 2 --port 8080" in text
