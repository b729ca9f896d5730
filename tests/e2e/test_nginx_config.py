"""The nginx files: `nginx -t` on every variant, the generated per-host files, the sizing for
10,000 WebSockets, and a live private nginx.

Each variant is laid out in a temporary directory the way it is deployed (dev: as PrivateNginx
does; compose: as docker-compose.yml mounts it; site: conf.d in a minimal main config) and
checked with ``nginx -t -p <tmp> -c <tmp>/nginx.conf``; nothing under /etc or /var is touched.
The live tests put a stub HTTP server on a unix socket where worker 0 would be and drive a
``PrivateNginx`` in front of it over real TCP: gzip, X-Request-ID, /metrics, retries past dead
slots, upstream keepalive, body limits, WebSocket upgrades and the workers' file limit.
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
import pwd
import re
import shlex
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from service.settings import Settings
from service.supervisor import private_nginx as private_nginx_mod
from service.supervisor.nginx import (
    DEV_MAIN_CONF,
    HOST_DIR,
    SERVER_FILE,
    SHARED_CONF,
    UPSTREAM_FILE,
    main_nginx_config,
    render_host_files,
    write_host_files,
)
from service.supervisor.private_nginx import (
    WORKER_RLIMIT_NOFILE,
    PrivateNginx,
    attainable_nofile,
    nginx_binary,
)
from support.polling import poll_until
from support.stack import children_of

REPO = Path(__file__).resolve().parents[2]
NGINX = nginx_binary()
SHARED = REPO / "nginx/graphql-service.conf"
DEV_MAIN = REPO / "nginx/nginx.dev.conf"
COMPOSE_MAIN = REPO / "nginx/nginx.compose.conf"
SITE = REPO / "nginx/graphql-service.site.conf"
COMPOSE_HOST_DIR = REPO / "nginx/compose"
# The ceiling every shipped config is sized for; each proxied WebSocket is two nginx connections.
WEBSOCKETS_PER_HOST = 10_000
TEMP_PATHS = (
    "client_body_temp_path",
    "proxy_temp_path",
    "fastcgi_temp_path",
    "uwsgi_temp_path",
    "scgi_temp_path",
)


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short directory under /tmp (unix socket paths are limited to 107 bytes)."""
    path = tempfile.mkdtemp(prefix="gsn", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def nginx_t(prefix: str, *main: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of ``prefix/nginx.conf`` with ``prefix`` as -p; ``main``: -g directives."""
    extra = ["-g", " ".join(main)] if main else []
    return subprocess.run(
        [NGINX, "-e", "stderr", "-t", "-p", prefix, "-c", f"{prefix}/nginx.conf", *extra],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def temp_paths(prefix: str) -> str:
    return "".join(f"{directive} {prefix}/{directive};\n" for directive in TEMP_PATHS)


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
    pattern = rf"(?m)(?:^|(?<=[{{;]))\s*{re.escape(name)}\s+([^;{{}}]*);"
    return [m.group(1).strip() for m in re.finditer(pattern, code(text))]


def one(text: str, name: str) -> str:
    [value] = directives(text, name)
    return value


def compose_nginx_mounts() -> dict[str, Path]:
    """docker-compose.yml's bind mounts into the nginx container's /etc/nginx: {path: source}."""
    data = YAML(typ="safe", pure=True).load((REPO / "docker-compose.yml").read_text())
    mounts = {}
    for volume in data["services"]["nginx"]["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith(".") and target.startswith("/etc/nginx/"):
            mounts[target] = REPO / source
    return mounts


def site_sizing() -> tuple[str, str]:
    """The worker_rlimit_nofile and events block that the site file asks nginx.conf for."""
    text = SITE.read_text()
    rlimit = re.search(r"(?m)^#\s+(worker_rlimit_nofile \d+;)$", text)
    events = re.search(r"(?m)^#\s+(events \{ worker_connections \d+; \})$", text)
    assert rlimit and events, "the site file must name the sizing for /etc/nginx/nginx.conf"
    return rlimit.group(1), events.group(1)


# --- every variant passes nginx -t ---------------------------------------------------------


def test_repository_links_are_the_packaged_files() -> None:
    # `pip install .` ships the package copies; nginx/ must not drift from them.
    assert SHARED.resolve() == SHARED_CONF
    assert DEV_MAIN.resolve() == DEV_MAIN_CONF


def test_dev_variant_passes_nginx_t_and_keeps_everything_under_the_prefix(short_dir: str) -> None:
    os.symlink(DEV_MAIN, f"{short_dir}/nginx.conf")
    os.symlink(SHARED, f"{short_dir}/graphql-service.conf")
    write_host_files(f"{short_dir}/{HOST_DIR}", render_host_files(workers=3, port=18080))
    assert_passes(nginx_t(short_dir, f"worker_rlimit_nofile {attainable_nofile()};"))
    # Runtime files resolve against -p: the dev config never reaches for /etc or /var.
    assert {"access.log", "client_body_temp", "proxy_temp"} <= set(os.listdir(short_dir))
    for text in (DEV_MAIN.read_text(), SHARED.read_text()):
        assert "/etc/" not in code(text) and "/var/" not in code(text)
    assert one(DEV_MAIN.read_text(), "daemon") == "off"


def test_compose_variant_passes_nginx_t_as_mounted_in_the_image(short_dir: str) -> None:
    mounts = compose_nginx_mounts()
    assert "/etc/nginx/nginx.conf" in mounts
    for target, source in mounts.items():
        link = Path(short_dir, target.removeprefix("/etc/nginx/"))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source)
    # The image's compiled-in pid and temp paths are under /var; move them into the prefix by
    # interposing on the shared file's include (the http level), keeping every mounted file.
    os.rename(f"{short_dir}/graphql-service.conf", f"{short_dir}/mounted-graphql-service.conf")
    Path(short_dir, "graphql-service.conf").write_text(
        temp_paths(short_dir) + "include mounted-graphql-service.conf;\n"
    )
    main = COMPOSE_MAIN.read_text()
    # The image runs `nginx -g 'daemon off;'` and keeps its own pid path: neither may be set.
    assert directives(main, "daemon") == [] and directives(main, "pid") == []
    assert_passes(nginx_t(short_dir, f"pid {short_dir}/nginx.pid;", "daemon off;"))


def test_site_variant_passes_nginx_t_in_a_main_config_sized_as_it_asks(short_dir: str) -> None:
    rlimit, events = site_sizing()
    # /etc/nginx in miniature: the distribution's nginx.conf including conf.d/*.conf.
    Path(short_dir, "nginx.conf").write_text(
        f"pid {short_dir}/nginx.pid;\nerror_log stderr;\n{rlimit}\n{events}\n"
        f"http {{\naccess_log off;\n{temp_paths(short_dir)}include conf.d/*.conf;\n}}\n"
    )
    os.mkdir(f"{short_dir}/conf.d")
    os.symlink(SITE, f"{short_dir}/conf.d/graphql-service.conf")
    os.symlink(SHARED, f"{short_dir}/graphql-service.conf")
    files = render_host_files(
        workers=2, port=8080, variant="site", access_log=f"{short_dir}/site.access.log"
    )
    write_host_files(f"{short_dir}/{HOST_DIR}", files)
    assert_passes(nginx_t(short_dir))
    assert os.path.exists(f"{short_dir}/site.access.log")
    # The snippet stays at http level: nothing that belongs to the main nginx.conf.
    site = code(SITE.read_text())
    for main_only in ("events", "http", "daemon", "pid", "user", "worker_processes"):
        assert not re.search(rf"(?m)^\s*{main_only}\b", site), main_only


# --- sizing: at least 10,000 concurrent WebSockets per host ----------------------------------


def test_every_main_config_is_sized_for_10000_websockets() -> None:
    rlimit_line, events_line = site_sizing()
    sized = {
        "dev": (one(DEV_MAIN.read_text(), "worker_connections"), str(WORKER_RLIMIT_NOFILE)),
        "compose": (
            one(COMPOSE_MAIN.read_text(), "worker_connections"),
            one(COMPOSE_MAIN.read_text(), "worker_rlimit_nofile"),
        ),
        "site": (one(events_line, "worker_connections"), one(rlimit_line, "worker_rlimit_nofile")),
    }
    for variant, (connections, rlimit) in sized.items():
        # One nginx worker alone must hold them all: two connections per proxied WebSocket,
        # and a file descriptor per connection plus one per buffered temp file.
        assert int(connections) >= 2 * WEBSOCKETS_PER_HOST, variant
        assert int(rlimit) >= 2 * int(connections), variant
    # The dev config leaves worker_rlimit_nofile to PrivateNginx's command line.
    assert directives(DEV_MAIN.read_text(), "worker_rlimit_nofile") == []


def test_attainable_nofile_is_the_wanted_limit_unless_the_hard_limit_forbids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(private_nginx_mod.resource, "getrlimit", lambda _: (1024, 20_000))
    monkeypatch.setattr(private_nginx_mod, "_may_raise_hard_limits", lambda: False)
    assert attainable_nofile(65_536) == 20_000
    assert attainable_nofile(8_192) == 8_192
    monkeypatch.setattr(private_nginx_mod, "_may_raise_hard_limits", lambda: True)
    assert attainable_nofile(65_536) == min(65_536, int(Path("/proc/sys/fs/nr_open").read_text()))
    monkeypatch.setattr(private_nginx_mod, "_may_raise_hard_limits", lambda: False)
    monkeypatch.setattr(private_nginx_mod.resource, "getrlimit", lambda _: (1024, 1_048_576))
    assert attainable_nofile(65_536) == 65_536


# --- the shared file --------------------------------------------------------------------------


def test_shared_file_includes_exactly_the_generated_files() -> None:
    text = SHARED.read_text()
    upstream = block(text, "upstream graphql_workers")
    assert directives(upstream, "include") == [f"{HOST_DIR}/{UPSTREAM_FILE}"]
    _, server = code(text).split("\nserver {", 1)
    assert directives(server, "include") == [f"{HOST_DIR}/{SERVER_FILE}"]
    assert len(directives(text, "include")) == 2
    # Everything a host varies comes from the generated files, never from here.
    for varying in ("listen", "client_max_body_size", "access_log", "server unix"):
        assert not re.search(rf"(?m)^\s*{varying}\b", code(text)), varying
    for main in (DEV_MAIN, COMPOSE_MAIN, SITE):
        assert directives(main.read_text(), "include") == ["graphql-service.conf"], main


def test_shared_file_key_directives() -> None:
    text = SHARED.read_text()
    upstream = block(text, "upstream graphql_workers")
    assert re.search(r"(?m)^\s*least_conn;", upstream)
    assert one(upstream, "keepalive") == "64"
    # Retries on connection errors and non-idempotent POSTs, never on timeouts; 0 leaves nginx's
    # own bound, one try per upstream server (a live test below retries past two dead slots).
    assert one(text, "proxy_next_upstream") == "error non_idempotent"
    assert one(text, "proxy_next_upstream_tries") == "0"
    assert one(text, "proxy_http_version") == "1.1"
    assert one(text, "add_header") == "X-Request-ID $req_id always"
    assert block(text, "map $http_upgrade $connection_upgrade").split() == [
        "default",
        "upgrade;",
        "''",
        "'';",
    ]
    assert "Connection $connection_upgrade" in directives(text, "proxy_set_header")
    assert block(text, "location = /metrics").split() == ["return", "404;"]
    assert block(text, "location /").split() == ["return", "404;"]
    for location in ("location /graphql", "location = /healthz", "location = /readyz"):
        assert block(text, location).split() == ["proxy_pass", "http://graphql_workers;"]


def test_timeouts_fit_the_app_settings() -> None:
    text = SHARED.read_text()
    settings = Settings()

    def secs(name: str) -> float:
        value = one(text, name)
        assert value.endswith("s"), value
        return float(value[:-1])

    idle = secs("proxy_read_timeout")
    assert secs("proxy_send_timeout") == idle
    # A quiet subscription is kept alive, a slow query answered by the app, not cut by nginx.
    assert settings.ws_keepalive_s < idle and settings.operation_timeout_s < idle
    # nginx closes an idle pooled connection before the worker does.
    assert secs("keepalive_timeout") < settings.keepalive_timeout_s


# --- the generated per-host files ---------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("variant", ["dev", "compose", "site"])
def test_one_upstream_server_per_slot(variant: str, workers: int) -> None:
    files = render_host_files(workers=workers, port=8080, variant=variant, socket_dir="/s")
    assert set(files) == {UPSTREAM_FILE, SERVER_FILE}
    assert directives(files[UPSTREAM_FILE], "server") == [
        f"unix:/s/worker{k} max_fails=0" for k in range(workers)
    ]
    assert "include" not in code(files[UPSTREAM_FILE] + files[SERVER_FILE])


@pytest.mark.parametrize(
    ("variant", "listen", "access_log"),
    [
        ("dev", "127.0.0.1:8080", "access.log"),
        ("compose", "0.0.0.0:8080", "/dev/stdout"),
        ("site", "0.0.0.0:8080", "/var/log/nginx/graphql-service.access.log"),
    ],
)
def test_server_file_per_variant(variant: str, listen: str, access_log: str) -> None:
    files = render_host_files(workers=2, port=8080, variant=variant)
    server = files[SERVER_FILE]
    assert one(server, "listen") == listen
    assert one(server, "client_max_body_size") == "1m"
    assert one(server, "access_log") == f"{access_log} graphql_service_json"
    assert len(code(server).split(";")) == 4  # those three directives and nothing else
    default_dir = {"dev": "/tmp", "compose": "/sockets", "site": "/run/graphql-service"}[variant]
    assert f"server unix:{default_dir}/worker1 " in files[UPSTREAM_FILE]


@pytest.mark.parametrize(
    ("host", "listen"),
    [("127.0.0.1", "127.0.0.1:8080"), ("::1", "[::1]:8080"), ("[::]", "[::]:8080")],
)
def test_listen_address(host: str, listen: str) -> None:
    files = render_host_files(workers=1, port=8080, listen_host=host)
    assert one(files[SERVER_FILE], "listen") == listen


@pytest.mark.parametrize(("n_bytes", "rendered"), [(1_048_576, "1m"), (2048, "2k"), (1000, "1000")])
def test_body_limit_follows_max_body_bytes(n_bytes: int, rendered: str) -> None:
    files = render_host_files(workers=1, port=8080, max_body_bytes=n_bytes)
    assert one(files[SERVER_FILE], "client_max_body_size") == rendered


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variant": "prod"}, "variant"),
        ({"workers": 0}, "workers"),
        ({"port": 0}, "port"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"socket_dir": "/tmp; include /etc/passwd"}, "not safe"),
        ({"socket_dir": "relative/dir"}, "absolute"),
        ({"socket_dir": "/" + "d" * 100}, "longer than"),
        ({"access_log": "/x.log main; return 200"}, "not safe"),
        ({"listen_host": "0.0.0.0 ssl"}, "not safe"),
    ],
)
def test_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"workers": 2, "port": 8080, **kwargs}
    with pytest.raises(ValueError, match=message):
        render_host_files(**args)  # type: ignore[arg-type]


def test_committed_compose_files_equal_a_fresh_run_of_their_command(short_dir: str) -> None:
    committed = {path.name: path.read_text() for path in COMPOSE_HOST_DIR.iterdir()}
    assert set(committed) == {UPSTREAM_FILE, SERVER_FILE}
    for text in committed.values():
        match = re.search(r"(?m)^#\s+graphql-service nginx-config (.*)$", text)
        assert match, text
        with contextlib.redirect_stdout(None):
            assert main_nginx_config([*shlex.split(match.group(1)), "--out-dir", short_dir]) == 0
        fresh = {name: Path(short_dir, name).read_text() for name in committed}
        assert fresh == committed, "nginx/compose drifted; regenerate it with its header command"


def test_cli_prints_or_writes_the_files_and_reports_errors(
    short_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--variant", "compose", "--workers", "3", "--port", "9090", "--socket-dir", "/x"]
    expected = render_host_files(variant="compose", workers=3, port=9090, socket_dir="/x")
    assert main_nginx_config(argv) == 0
    out = capsys.readouterr().out
    assert out == "".join(f"# ==> {HOST_DIR}/{name} <==\n{text}" for name, text in expected.items())
    out_dir = f"{short_dir}/{HOST_DIR}"
    assert main_nginx_config([*argv, "--out-dir", out_dir]) == 0
    assert capsys.readouterr().out == "".join(f"wrote {out_dir}/{name}\n" for name in expected)
    assert sorted(os.listdir(out_dir)) == sorted(expected)  # no partial files left behind
    for name, text in expected.items():
        assert Path(out_dir, name).read_text() == text
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

        poll_until(lambda: len(logged()) == 20, timeout_s=5, what="20 access log lines")
        lines = logged()
    assert all(line["status"] == 200 for line in lines)
    retried = [str(line["upstream"]) for line in lines if "," in str(line["upstream"])]
    assert retried, "no request tried a dead slot first"
    for upstream in retried:
        assert upstream.endswith(f"unix:{live.socket_dir}/worker0")
        assert re.search(r"worker[12],", upstream)
    # Both dead slots before the live one: every slot gets a try (proxy_next_upstream_tries 0).
    assert any(upstream.count(",") == 2 for upstream in retried)


def test_body_over_the_limit_is_413(live: Live) -> None:
    conn = live.connect()
    try:
        response, _ = request(
            conn, "POST", "/graphql", b"x" * (2 * MAX_BODY_BYTES), {"X-Request-ID": "req-big"}
        )
        assert response.status == 413
        assert live.stub.requests_with("req-big") == []
        response, _ = request(
            conn, "POST", "/graphql", b"x" * MAX_BODY_BYTES, {"X-Request-ID": "req-at-limit"}
        )
        assert response.status == 200
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


def test_workers_get_the_file_limit_and_an_unprivileged_user(live: Live) -> None:
    nginx = live.nginx
    assert nginx.pid is not None
    # 65536 wherever the master may set it; only a lower hard limit, without CAP_SYS_RESOURCE to
    # raise it (as in some containers), leaves the workers that hard limit instead.
    assert nginx.rlimit_nofile == attainable_nofile(WORKER_RLIMIT_NOFILE)

    def worker_limits() -> dict[int, tuple[int, int]]:
        limits = {}
        for pid in children_of(nginx.pid or 0):
            text = Path(f"/proc/{pid}/limits").read_text()
            match = re.search(r"(?m)^Max open files\s+(\d+)\s+(\d+)", text)
            assert match, text
            limits[pid] = (int(match.group(1)), int(match.group(2)))
        return limits

    expected = (nginx.rlimit_nofile, nginx.rlimit_nofile)
    poll_until(
        lambda: set(worker_limits().values()) == {expected},
        timeout_s=10,
        what=f"nginx workers with RLIMIT_NOFILE {expected}",
    )
    workers = worker_limits()
    if os.geteuid() == 0:
        assert nginx.worker_user is not None
        uid = pwd.getpwnam(nginx.worker_user.split()[0]).pw_uid
        for pid in workers:
            assert os.stat(f"/proc/{pid}").st_uid == uid


def test_private_nginx_stops_gracefully(short_dir: str) -> None:
    prefix = os.path.join(short_dir, "p")
    port = free_port()
    nginx = PrivateNginx(workers=1, port=port, socket_dir=short_dir, prefix_dir=prefix)
    assert nginx.exited() is None  # not started
    try:
        nginx.start()
        nginx.wait_ready(timeout_s=10)
        assert nginx.exited() is None
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        status = nginx.stop(timeout_s=10)
    assert status == 0 and nginx.exited() == 0
    assert nginx.stop() == 0  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert Path(prefix, "nginx.conf").resolve() == DEV_MAIN_CONF
    assert Path(prefix, "graphql-service.conf").resolve() == SHARED_CONF
    assert sorted(os.listdir(os.path.join(prefix, HOST_DIR))) == [SERVER_FILE, UPSTREAM_FILE]


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
            assert nginx.exited() not in (None, 0)
        finally:
            nginx.stop()
