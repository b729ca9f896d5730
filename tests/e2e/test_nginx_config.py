"""The nginx configs: rendered text, `nginx -t` on every variant, and a live private nginx.

The live tests put a stub HTTP server on a unix socket where worker 0 would be and drive a
``PrivateNginx`` in front of it over real TCP: gzip, X-Request-ID, /metrics, retries past dead
slots, upstream keepalive, body limits and WebSocket upgrades.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import http.client
import http.server
import itertools
import json
import os
import re
import shlex
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from service.supervisor import nginx as nginx_mod
from service.supervisor.nginx import (
    PrivateNginx,
    main_nginx_config,
    nginx_binary,
    render_nginx_config,
)

REPO = Path(__file__).resolve().parents[2]
NGINX = nginx_binary()

COMMITTED = {
    "nginx/nginx.dev.conf": {"variant": "dev", "workers": 2, "port": 8080},
    "nginx/nginx.compose.conf": {"variant": "compose", "workers": 2, "port": 8080},
    "nginx/graphql-service.site.conf": {"variant": "site", "workers": 2, "port": 8080},
}


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory under /tmp (unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="gsn", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nginx_t(prefix: str, conf: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-e", "stderr", "-t", "-p", prefix, "-c", conf],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def site_main_conf(prefix: str, snippet: str) -> str:
    """A minimal main nginx.conf that includes a site snippet, as conf.d does."""
    temp = "\n".join(
        f"    {directive} {prefix}/{name};" for directive, name in nginx_mod._TEMP_PATHS
    )
    return (
        f"pid {prefix}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n    access_log off;\n{temp}\n    include {snippet};\n}}\n"
    )


def code(text: str) -> str:
    """``text`` without comments (no directive here has a ``#`` in an argument)."""
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def block(text: str, opener: str) -> str:
    """The body of the first ``opener { ... }`` block (braces only inside quoted strings)."""
    body = r"((?:\"[^\"]*\"|'[^']*'|[^{}\"'])*)"
    match = re.search(re.escape(opener) + r"\s*\{" + body + r"\}", code(text))
    assert match, f"no block {opener!r}"
    return match.group(1)


def directives(text: str, name: str) -> list[str]:
    """Arguments of every ``name ...;`` directive, comments ignored."""
    pattern = rf"(?m)^\s*{re.escape(name)}\s+([^;]*);"
    return [m.group(1).strip() for m in re.finditer(pattern, code(text))]


# --- rendering -----------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["dev", "compose", "site"])
def test_every_variant_passes_nginx_t(variant: str, short_dir: str) -> None:
    text = render_nginx_config(workers=3, port=18080, variant=variant, prefix=short_dir)
    if variant == "site":
        snippet = os.path.join(short_dir, "graphql-service.conf")
        Path(snippet).write_text(text)
        conf = os.path.join(short_dir, "nginx.conf")
        Path(conf).write_text(site_main_conf(short_dir, snippet))
    else:
        conf = os.path.join(short_dir, "nginx.conf")
        Path(conf).write_text(text)
    result = nginx_t(short_dir, conf)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_dev_config_is_self_contained(short_dir: str) -> None:
    text = render_nginx_config(workers=2, port=18080, variant="dev", prefix=short_dir)
    assert "/etc/nginx" not in code(text)
    assert "/var/" not in code(text)
    assert directives(text, "include") == []
    assert directives(text, "daemon") == ["off"]
    assert directives(text, "master_process") == ["on"]
    assert directives(text, "pid") == [f"{short_dir}/nginx.pid"]
    assert directives(text, "error_log") == ["stderr"]
    assert directives(text, "access_log") == [f"{short_dir}/access.log graphql_service_json"]
    for directive, name in nginx_mod._TEMP_PATHS:
        assert directives(text, directive) == [f"{short_dir}/{name}"]
    assert "application/json json;" in block(text, "types")
    assert "escape=json" in text and '"request_id":"$req_id"' in text


def test_committed_dev_conf_keeps_runtime_files_under_the_p_prefix(short_dir: str) -> None:
    result = nginx_t(short_dir, str(REPO / "nginx/nginx.dev.conf"))
    assert result.returncode == 0, result.stderr
    created = set(os.listdir(short_dir))
    assert {"access.log", "client_body_temp", "proxy_temp"} <= created


def test_compose_config_leaves_daemon_to_the_image() -> None:
    text = (REPO / "nginx/nginx.compose.conf").read_text()
    assert directives(text, "daemon") == []
    assert directives(text, "listen") == ["0.0.0.0:8080"]
    assert directives(text, "access_log") == ["/dev/stdout graphql_service_json"]
    assert directives(text, "error_log") == ["stderr"]
    assert "server unix:/sockets/worker0 " in text and "server unix:/sockets/worker1 " in text


def test_compose_tested_with_prefix_differs_only_in_runtime_paths(short_dir: str) -> None:
    committed = render_nginx_config(workers=2, port=8080, variant="compose").splitlines()
    tested = render_nginx_config(
        workers=2, port=8080, variant="compose", prefix=short_dir
    ).splitlines()
    only_tested = [line for line in tested if line not in committed]
    only_committed = [line for line in committed if line not in tested]
    runtime = {"pid"} | {directive for directive, _ in nginx_mod._TEMP_PATHS}
    assert only_tested, "the prefix should add pid and temp paths"
    for line in only_tested:
        stripped = line.strip()
        if stripped.startswith("#"):
            assert "--prefix" in stripped
            continue
        assert stripped.split()[0] in runtime, line
        assert short_dir in stripped
    assert [line for line in only_committed if not line.lstrip().startswith("#")] == []


def test_site_is_an_http_level_snippet() -> None:
    text = (REPO / "nginx/graphql-service.site.conf").read_text()
    for main_only in ("events", "http", "daemon", "pid", "user", "worker_processes"):
        assert directives(text, main_only) == []
        assert not re.search(rf"(?m)^\s*{main_only}\s*\{{", text)
    assert "server unix:/run/graphql-service/worker0 " in text
    assert directives(text, "access_log") == [
        "/var/log/nginx/graphql-service.access.log graphql_service_json"
    ]


@pytest.mark.parametrize("path", sorted(COMMITTED))
def test_committed_file_equals_a_fresh_render(path: str) -> None:
    fresh = render_nginx_config(**COMMITTED[path])  # type: ignore[arg-type]
    assert (REPO / path).read_text() == fresh, (
        f"{path} drifted; regenerate it with the command in its header"
    )


@pytest.mark.parametrize("variant", ["dev", "compose", "site"])
def test_key_directives(variant: str) -> None:
    text = render_nginx_config(workers=2, port=8080, variant=variant, socket_dir="/s")
    upstream = block(text, "upstream graphql_workers")
    assert re.search(r"(?m)^\s*least_conn;", upstream)
    assert directives(upstream, "keepalive") == ["64"]
    assert directives(upstream, "server") == [
        "unix:/s/worker0 max_fails=0",
        "unix:/s/worker1 max_fails=0",
    ]
    assert directives(text, "gzip") == ["on"]
    assert set(directives(text, "gzip_types")[0].split()) == {
        "application/json",
        "application/graphql-response+json",
    }
    assert directives(text, "gzip_min_length") == ["1024"]
    assert directives(text, "gzip_proxied") == ["any"]
    assert directives(text, "gzip_vary") == ["on"]
    assert directives(text, "client_max_body_size") == ["1m"]
    # Retries: connection errors and non-idempotent POSTs, never timeouts.
    assert directives(text, "proxy_next_upstream") == ["error non_idempotent"]
    assert directives(text, "proxy_next_upstream_tries") == ["2"]
    assert block(text, "map $http_upgrade $connection_upgrade").split() == [
        "default",
        "upgrade;",
        "''",
        "'';",
    ]
    request_id_map = block(text, "map $http_x_request_id $req_id")
    assert "default $request_id;" in request_id_map
    proxy_headers = directives(text, "proxy_set_header")
    for header in (
        "Host $host",
        "X-Real-IP $remote_addr",
        "X-Forwarded-For $proxy_add_x_forwarded_for",
        "X-Request-ID $req_id",
        "Upgrade $http_upgrade",
        "Connection $connection_upgrade",
    ):
        assert header in proxy_headers
    assert directives(text, "proxy_http_version") == ["1.1"]
    assert directives(text, "add_header") == ["X-Request-ID $req_id always"]
    assert block(text, "location = /metrics").split() == ["return", "404;"]
    for location in ("location /graphql", "location = /healthz", "location = /readyz"):
        assert block(text, location).split() == ["proxy_pass", "http://graphql_workers;"]
    assert directives(text, "proxy_read_timeout") == ["75s"]


@pytest.mark.parametrize("workers", [1, 4])
def test_one_upstream_server_per_slot(workers: int) -> None:
    for variant in ("dev", "compose", "site"):
        text = render_nginx_config(workers=workers, port=8080, variant=variant, socket_dir="/s")
        servers = directives(block(text, "upstream graphql_workers"), "server")
        assert [s.split()[0] for s in servers] == [f"unix:/s/worker{k}" for k in range(workers)]
        assert directives(text, "proxy_next_upstream_tries") == [str(workers)]


def test_timeouts_fit_the_app_settings() -> None:
    settings = Settings()
    assert settings.ws_keepalive_s < nginx_mod.PROXY_IDLE_TIMEOUT_S
    assert settings.operation_timeout_s < nginx_mod.PROXY_IDLE_TIMEOUT_S
    assert settings.keepalive_timeout_s > nginx_mod.UPSTREAM_KEEPALIVE_TIMEOUT_S
    text = render_nginx_config(workers=1, port=8080)
    assert directives(text, "keepalive_timeout") == [f"{nginx_mod.UPSTREAM_KEEPALIVE_TIMEOUT_S}s"]


@pytest.mark.parametrize(
    ("host", "listen"),
    [("127.0.0.1", "127.0.0.1:8080"), ("::1", "[::1]:8080"), ("[::]", "[::]:8080")],
)
def test_listen_address(host: str, listen: str) -> None:
    text = render_nginx_config(workers=1, port=8080, listen_host=host)
    assert directives(text, "listen") == [listen]


@pytest.mark.parametrize(("n_bytes", "rendered"), [(1_048_576, "1m"), (2048, "2k"), (1000, "1000")])
def test_body_limit_follows_max_body_bytes(n_bytes: int, rendered: str) -> None:
    text = render_nginx_config(workers=1, port=8080, max_body_bytes=n_bytes)
    assert directives(text, "client_max_body_size") == [rendered]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "prod"}, "variant"),
        ({"workers": 0}, "workers"),
        ({"port": 0}, "port"),
        ({"socket_dir": "/tmp; include /etc/passwd"}, "not safe"),
        ({"socket_dir": "relative/dir"}, "absolute"),
        ({"socket_dir": "/" + "d" * 100}, "longer than"),
        ({"prefix": "var/run"}, "absolute"),
        ({"variant": "site", "user": "www-data"}, "user"),
        ({"user": "www-data;"}, "user"),
    ],
)
def test_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"workers": 2, "port": 8080, **kwargs}
    with pytest.raises(ValueError, match=message):
        render_nginx_config(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(COMMITTED))
def test_header_command_regenerates_the_file(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    text = (REPO / path).read_text()
    match = re.search(r"(?m)^#\s+graphql-service nginx-config (.*)$", text)
    assert match
    assert main_nginx_config(shlex.split(match.group(1))) == 0
    assert capsys.readouterr().out == text


def test_cli_prints_the_render_and_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--variant", "compose", "--workers", "3", "--port", "9090", "--socket-dir", "/x"]
    assert main_nginx_config(argv) == 0
    out = capsys.readouterr().out
    assert out == render_nginx_config(variant="compose", workers=3, port=9090, socket_dir="/x")
    assert main_nginx_config(["--workers", "0"]) == 2
    assert "workers must be at least 1" in capsys.readouterr().err


# --- a live private nginx in front of a stub worker ------------------------------------------


@dataclasses.dataclass
class Seen:
    path: str
    method: str
    request_id: str | None
    connection: str | None
    conn_id: int
    body_len: int


class StubWorker(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An HTTP/1.1 server on a unix socket that records what nginx forwarded."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.conn_ids = itertools.count()
        super().__init__(path, StubHandler)
        os.chmod(path, 0o777)

    def requests_with(self, request_id: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.request_id == request_id]


class StubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StubWorker

    def setup(self) -> None:
        super().setup()
        self.conn_id = next(self.server.conn_ids)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def address_string(self) -> str:
        return "unix"

    def _record(self, body_len: int) -> Seen:
        seen = Seen(
            path=self.path,
            method=self.command,
            request_id=self.headers.get("X-Request-ID"),
            connection=self.headers.get("Connection"),
            conn_id=self.conn_id,
            body_len=body_len,
        )
        with self.server.lock:
            self.server.seen.append(seen)
        return seen

    def _answer(self, body_len: int) -> None:
        seen = self._record(body_len)
        padding = 10 if self.path.endswith("/small") else 3000
        payload = json.dumps({**dataclasses.asdict(seen), "padding": "x" * padding}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-ID", "set-by-the-app")
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._record(0)
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            data = self.rfile.read1(65536)
            self.wfile.write(b"echo:" + data)
            self.wfile.flush()
            self.close_connection = True
            return
        self._answer(0)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(len(body))


@dataclasses.dataclass
class Live:
    nginx: PrivateNginx
    stub: StubWorker
    port: int
    socket_dir: str

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response, response.read()


MAX_BODY_BYTES = 4096


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` until it holds or the deadline passes; its last value."""
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.01)
    return True


@dataclasses.dataclass
class Slots:
    socket_dir: str
    stub: StubWorker


@pytest.fixture(scope="module")
def slots() -> Iterator[Slots]:
    """Three slots: worker0 a stub, worker1 missing, worker2 refusing connections."""
    socket_dir = tempfile.mkdtemp(prefix="gsn", dir="/tmp")
    os.chmod(socket_dir, 0o755)
    stub = StubWorker(os.path.join(socket_dir, "worker0"))
    serving = threading.Thread(target=stub.serve_forever, kwargs={"poll_interval": 0.05})
    serving.start()
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        refusing.bind(os.path.join(socket_dir, "worker2"))  # bound, never listening
        os.chmod(os.path.join(socket_dir, "worker2"), 0o777)
        yield Slots(socket_dir=socket_dir, stub=stub)
    finally:
        stub.shutdown()
        serving.join(timeout=10)
        stub.server_close()
        refusing.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextlib.contextmanager
def private_nginx(slots: Slots) -> Iterator[Live]:
    prefix_dir = tempfile.mkdtemp(prefix="gsp", dir="/tmp")
    port = free_port()
    nginx = PrivateNginx(
        workers=3,
        port=port,
        socket_dir=slots.socket_dir,
        prefix_dir=prefix_dir,
        max_body_bytes=MAX_BODY_BYTES,
    )
    try:
        nginx.start()
        nginx.wait_ready(timeout_s=10)
        yield Live(nginx=nginx, stub=slots.stub, port=port, socket_dir=slots.socket_dir)
    finally:
        nginx.stop()
        shutil.rmtree(prefix_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def live(slots: Slots) -> Iterator[Live]:
    with private_nginx(slots) as running:
        yield running


def test_gzip_and_client_request_id(live: Live) -> None:
    conn = live.connect()
    try:
        response, body = request(
            conn,
            "POST",
            "/graphql",
            body=b'{"query":"{ hello }"}',
            headers={
                "Content-Type": "application/json",
                "Accept-Encoding": "gzip",
                "X-Request-ID": "req-gzip-1",
            },
        )
        assert response.status == 200
        assert response.getheader("Content-Encoding") == "gzip"
        assert "Accept-Encoding" in (response.getheader("Vary") or "")
        # The app's own X-Request-ID is replaced, so there is exactly one.
        assert response.headers.get_all("X-Request-ID") == ["req-gzip-1"]
        payload = json.loads(gzip.decompress(body))
        assert payload["request_id"] == "req-gzip-1"
        assert payload["path"] == "/graphql"
        assert payload["body_len"] == len(b'{"query":"{ hello }"}')

        response, body = request(conn, "POST", "/graphql", b"{}", {"X-Request-ID": "req-plain"})
        assert response.status == 200
        assert response.getheader("Content-Encoding") is None
        assert json.loads(body)["request_id"] == "req-plain"

        response, body = request(conn, "POST", "/graphql/small", b"{}", {"Accept-Encoding": "gzip"})
        assert response.status == 200
        assert response.getheader("Content-Encoding") is None  # under gzip_min_length
        assert json.loads(body)["path"] == "/graphql/small"
    finally:
        conn.close()


@pytest.mark.parametrize("sent", [None, "has spaces in it", "x" * 200])
def test_nginx_generates_a_request_id_when_missing_or_unsafe(live: Live, sent: str | None) -> None:
    conn = live.connect()
    try:
        headers = {} if sent is None else {"X-Request-ID": sent}
        response, body = request(conn, "POST", "/graphql", b"{}", headers)
        assert response.status == 200
        generated = response.getheader("X-Request-ID")
        assert generated and re.fullmatch(r"[0-9a-f]{32}", generated)
        assert json.loads(body)["request_id"] == generated
    finally:
        conn.close()


def test_metrics_and_unknown_paths_are_404_and_never_proxied(live: Live) -> None:
    conn = live.connect()
    try:
        for path in ("/metrics", "/metrics/", "/elsewhere"):
            response, _ = request(conn, "GET", path, headers={"X-Request-ID": "req-404"})
            assert response.status == 404, path
            assert response.getheader("X-Request-ID") == "req-404"
        assert live.stub.requests_with("req-404") == []
        for path in ("/healthz", "/readyz"):
            response, body = request(conn, "GET", path, headers={"X-Request-ID": "req-health"})
            assert response.status == 200
            assert json.loads(body)["path"] == path
    finally:
        conn.close()


def test_dead_slots_are_skipped_and_connections_reused(slots: Slots) -> None:
    # A fresh nginx, so no slot is resting (fail_timeout) from an earlier test's failure.
    with private_nginx(slots) as live:
        conn = live.connect()  # one client connection: one nginx worker, one upstream pool
        try:
            statuses = []
            for _ in range(20):
                response, _ = request(
                    conn, "POST", "/graphql", b"{}", {"X-Request-ID": "req-retry"}
                )
                statuses.append(response.status)
        finally:
            conn.close()
        assert statuses == [200] * 20
        seen = live.stub.requests_with("req-retry")
        assert len(seen) == 20 and all(s.method == "POST" for s in seen)
        # Plain requests send no Connection header upstream, so pooled connections are reused.
        assert {s.connection for s in seen} == {None}
        assert len({s.conn_id for s in seen}) < 5

        # nginx logs a request just after answering it: poll for all 20 lines.
        def logged() -> list[dict[str, object]]:
            text = Path(live.nginx.access_log_path).read_text()
            return [json.loads(line) for line in text.splitlines() if '"req-retry"' in line]

        assert wait_for(lambda: len(logged()) == 20, timeout_s=5)
        lines = logged()
    assert all(line["status"] == 200 for line in lines)
    retried = [str(line["upstream"]) for line in lines if "," in str(line["upstream"])]
    assert retried, "no request tried a dead slot first"
    for upstream in retried:
        assert upstream.endswith(f"unix:{live.socket_dir}/worker0")
        assert re.search(r"worker[12],", upstream)


def test_body_over_the_limit_is_413(live: Live) -> None:
    conn = live.connect()
    try:
        response, _ = request(
            conn, "POST", "/graphql", b"x" * (2 * MAX_BODY_BYTES), {"X-Request-ID": "req-big"}
        )
        assert response.status == 413
        assert live.stub.requests_with("req-big") == []
    finally:
        conn.close()


def test_websocket_upgrade_is_tunnelled(live: Live) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(
            b"GET /graphql HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n"
            b"X-Request-ID: req-ws\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, "nginx closed before answering the upgrade"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(b"ping-frame")
        while b"echo:ping-frame" not in rest:
            chunk = sock.recv(4096)
            assert chunk, "tunnel closed before the echo"
            rest += chunk
    [seen] = live.stub.requests_with("req-ws")
    assert (seen.connection or "").lower() == "upgrade"


def test_private_nginx_stops_gracefully(short_dir: str) -> None:
    prefix = os.path.join(short_dir, "p")
    port = free_port()
    nginx = PrivateNginx(workers=1, port=port, socket_dir=short_dir, prefix_dir=prefix)
    try:
        nginx.start()
        nginx.wait_ready(timeout_s=10)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        status = nginx.stop(timeout_s=10)
    assert status == 0
    assert nginx.stop() == 0  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert os.path.exists(os.path.join(prefix, "nginx.conf"))


def test_private_nginx_reports_a_bad_start(short_dir: str) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        nginx = PrivateNginx(
            workers=1, port=port, socket_dir=short_dir, prefix_dir=os.path.join(short_dir, "p")
        )
        try:
            nginx.start()
            # The port answers, but it is not this nginx: readiness must not be faked.
            with pytest.raises(RuntimeError, match="exited"):
                nginx.wait_ready(timeout_s=20)
        finally:
            nginx.stop()
