"""Several hosts behind a load balancer, on one machine (the README's multi-host layout).

``Cluster`` makes a bridge and one network namespace per host (``support/netns.py``). Each host
runs what the README's multi-host section says a host runs: the supervisor (``graphql-service
serve``, two workers) and nginx in front of its worker sockets, listening on the host's own
address, port 8080. All hosts share one Postgres database and one Redis: this machine's, which
listen on 127.0.0.1 only, reached through forwarders on the bridge address. The database is
migrated by every host at once (``graphql-service migrate`` in each namespace), which the
advisory lock makes safe. ``Balancer`` is an nginx in the root namespace in front of the hosts'
nginx: it passes WebSocket upgrades and retries idempotent requests on the next host.

``python -m support.multihost`` (``make multihost-up``) keeps such a cluster up until Ctrl-C and
prints its addresses. Needs root, ``ip``, ``socat`` and nginx.
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
from pathlib import Path
from types import TracebackType

from service.supervisor.healthcheck import UnixHTTPConnection
from service.supervisor.private_nginx import PrivateNginx, nginx_binary
from support import dbutil
from support.netns import NetHost, Network
from support.polling import poll_until

REPO = Path(__file__).resolve().parents[1]
HOST_PORT = 8080
WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NamespacedNginx(PrivateNginx):
    """``PrivateNginx`` (nginx.dev.conf in front of the slot sockets) inside a host's namespace."""

    def __init__(
        self, host: NetHost, *, workers: int, port: int, socket_dir: str, prefix_dir: str
    ) -> None:
        super().__init__(
            workers=workers,
            port=port,
            socket_dir=socket_dir,
            prefix_dir=prefix_dir,
            listen_host=host.address,
        )
        self.host = host

    def _command(self, *extra: str) -> list[str]:
        return self.host.command(super()._command(*extra))


class Host:
    """One host: its namespace, supervisor and nginx. ``start()``, ``stop()`` (graceful),
    ``crash()`` (SIGKILL to everything), ``kill_supervisor()`` (SIGKILL to the arbiter only:
    its workers notice and exit; nginx stays and answers 502)."""

    def __init__(self, net: NetHost, workdir: Path, env: dict[str, str]) -> None:
        self.net = net
        self.name = net.name
        self.address = net.address
        self.workdir = workdir
        self.socket_dir = workdir / "s"
        self.env = {
            **env,
            "WORKERS": str(WORKERS),
            "SOCKET_DIR": str(self.socket_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "m"),
        }
        self.log_path = workdir / "supervisor.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.nginx: NamespacedNginx | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{HOST_PORT}/graphql"

    def migrate(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.net.command([sys.executable, "-m", "service.supervisor.cli", "migrate"]),
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> Host:
        for directory in (self.workdir, self.socket_dir):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            directory.chmod(0o755)  # nginx's worker user reaches the sockets
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.net.command([sys.executable, "-m", "service.supervisor.cli", "serve"]),
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        poll_until(self.every_slot_answers, timeout_s=30, what=f"every slot of host {self.name}")
        self.nginx = NamespacedNginx(
            self.net,
            workers=WORKERS,
            port=HOST_PORT,
            socket_dir=str(self.socket_dir),
            prefix_dir=str(self.workdir / "nginx"),
        )
        self.nginx.start()
        self.nginx.wait_ready(15)
        return self

    def every_slot_answers(self) -> bool:
        proc = self.proc
        assert proc is not None and proc.poll() is None, (
            f"host {self.name}: serve exited\n{self.log()}"
        )
        for k in range(WORKERS):
            conn = UnixHTTPConnection(str(self.socket_dir / f"worker{k}"), 2.0)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status != 200:
                    return False
            finally:
                conn.close()
        return True

    def kill_supervisor(self) -> None:
        """SIGKILL to the arbiter alone, as an OOM kill or a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def crash(self) -> None:
        """SIGKILL to the supervisor's and nginx's process groups at once."""
        for pid in (self.proc.pid if self.proc else None, self.nginx.pid if self.nginx else None):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self._reap()

    def stop(self) -> None:
        """The supervisor drains (TERM: in-flight requests finish, WebSockets close with 1001),
        then nginx stops gracefully."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        if self.nginx is not None:
            self.nginx.stop(10)
        self._reap()

    def _reap(self) -> None:
        if self.proc is not None:
            # Workers of an arbiter killed with SIGKILL, or one that did not stop in time.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        if self.nginx is not None:
            self.nginx.stop(5)
        self.proc = None
        self.nginx = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""


BALANCER_CONF = """# The load balancer in front of every host's nginx (support/multihost.py).
daemon off;
master_process on;
worker_processes 1;
pid nginx.pid;
error_log stderr;

events {{
    worker_connections 4096;
}}

http {{
    log_format balancer escape=json
        '{{"time":"$time_iso8601","status":$status,"upstream":"$upstream_addr",'
        '"upstream_status":"$upstream_status"}}';
    access_log access.log balancer;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}

    upstream graphql_hosts {{
        # A host that fails a request rests for 2 s, then gets requests again: that is how it
        # rejoins (nginx without active health checks).
{servers}
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};

        location / {{
            proxy_pass http://graphql_hosts;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Request-ID $request_id;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # Idempotent requests (GET queries) go to the next host when one refuses, resets,
            # times out connecting, or answers 502/503/504 (its nginx is up, its workers are
            # not). nginx never retries a POST that reached a host.
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_timeout 10s;
            proxy_connect_timeout 2s;
            proxy_read_timeout 75s;
            proxy_send_timeout 75s;
        }}
    }}
}}
"""


class Balancer:
    """nginx in the root namespace on 127.0.0.1:port, over the hosts' nginx."""

    def __init__(self, hosts: list[Host], prefix_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.prefix_dir = prefix_dir
        self.access_log = prefix_dir / "access.log"
        self.hosts = hosts
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    def start(self) -> Balancer:
        self.prefix_dir.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server {h.address}:{HOST_PORT} max_fails=1 fail_timeout=2s;"
            for h in self.hosts
        )
        conf = self.prefix_dir / "nginx.conf"
        conf.write_text(BALANCER_CONF.format(servers=servers, port=self.port))
        argv = [nginx_binary(), "-e", "stderr", "-p", str(self.prefix_dir), "-c", str(conf)]
        check = subprocess.run(
            [*argv, "-t", "-q"], capture_output=True, text=True, timeout=30, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejected the balancer config:\n{check.stderr}")
        self.proc = subprocess.Popen(argv, start_new_session=True)
        proc = self.proc

        def accepting() -> bool:
            assert proc.poll() is None, "the balancer's nginx exited"
            if not (self.prefix_dir / "nginx.pid").exists():
                return False
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        poll_until(accepting, timeout_s=15, what="the balancer")
        return self

    def entries(self) -> list[dict[str, object]]:
        with contextlib.suppress(FileNotFoundError):
            return [json.loads(line) for line in self.access_log.read_text().splitlines()]
        return []

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGQUIT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None


class Cluster:
    """``names`` hosts on one bridge, sharing this machine's Postgres (a fresh database) and
    Redis, each with its supervisor and nginx, and a ``Balancer`` in front of them."""

    def __init__(self, names: tuple[str, ...] = ("a", "b", "c"), env: dict[str, str] | None = None):
        self.names = names
        self.extra_env = env or {}
        self.workdir = Path(tempfile.mkdtemp(prefix="gsm", dir="/tmp"))  # short socket paths
        self.workdir.chmod(0o755)
        self.database_url = dbutil.fresh_url()
        self.network = Network()
        self.hosts: dict[str, Host] = {}
        self.balancer: Balancer | None = None

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            for host in self.hosts.values():
                print(f"--- host {host.name}:\n{host.log()}", file=sys.stderr)
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Cluster:
        self.network.start()
        postgres = self.network.forward(5432)
        redis = self.network.forward(6379)
        database = dbutil.database_name(self.database_url)
        env = {
            **os.environ,
            "DATABASE_URL": f"postgresql://postgres@{postgres}/{database}",
            "REDIS_URL": f"redis://{redis}/0",
            "GRACEFUL_TIMEOUT_S": "10",
            **self.extra_env,
        }
        for name in self.names:
            self.hosts[name] = Host(self.network.add_host(name), self.workdir / name, env)
        # Every host migrates at the same moment; the advisory lock serializes them.
        migrations = [host.migrate() for host in self.hosts.values()]
        for host, proc in zip(self.hosts.values(), migrations, strict=True):
            out, _ = proc.communicate(timeout=60)
            if proc.returncode != 0:
                raise RuntimeError(f"migrate on host {host.name} failed:\n{out.decode()}")
        for host in self.hosts.values():
            host.start()
        self.balancer = Balancer(list(self.hosts.values()), self.workdir / "balancer").start()
        return self

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
        for host in self.hosts.values():
            host.stop()
        self.network.stop()
        with contextlib.suppress(Exception):
            dbutil.drop_database(self.database_url)
        shutil.rmtree(self.workdir, ignore_errors=True)


def graphql_get(url: str, query: str, timeout: float = 10) -> tuple[int, bytes]:
    """One GET query (``url`` like ``http://host:port/graphql``) on a connection of its own."""
    from urllib.parse import quote, urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        conn.request("GET", f"{parts.path}?query={quote(query)}")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def main() -> int:
    """Keep a three-host cluster with a balancer up until Ctrl-C (``make multihost-up``)."""
    from support.netns import missing_tools

    missing = missing_tools()
    if missing:
        print(f"cannot run: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with Cluster() as cluster:
        assert cluster.balancer is not None
        for host in cluster.hosts.values():
            print(f"host {host.name}: {host.url} (namespace {host.net.netns})")
        print(f"balancer: {cluster.balancer.url}  (Ctrl-C stops everything)", flush=True)
        while not stopping:
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
