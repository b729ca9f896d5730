"""Deployment artifacts, validated offline: Dockerfile, docker-compose.yml, env examples,
the systemd unit, and the healthcheck command.

No Docker engine and no systemd PID 1 here, so each artifact is checked by the tool that knows
its format (hadolint, the compose-spec JSON schema, ``systemd-analyze verify`` and
``security --offline``), by structural asserts that tie the files to each other and to the
code, and by replaying the Dockerfile outside a container: its builder stage's COPY and RUN
lines build a fresh venv, then the runtime stage's ENV, CMD and HEALTHCHECK run against real
Postgres, Redis and nginx. nginx -t on every nginx variant (dev, compose, site) is covered by
tests/e2e/test_nginx_config.py, promtool by tests/e2e/test_deploy_observability.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from service.settings import Settings
from service.supervisor.healthcheck import main_healthcheck
from service.supervisor.nginx import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SOCKET_DIR,
    DEV_MAIN_CONF,
    HOST_DIR,
    SHARED_CONF,
    UPSTREAM_FILE,
    render_host_files,
)
from service.supervisor.private_nginx import PrivateNginx
from support import dbutil
from support.stack import REDIS_URL, UnixHTTPConnection, free_port, poll, request

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
UNIT = REPO / "systemd/graphql-service.service"
UNIT_ENV_EXAMPLE = REPO / "systemd/graphql-service.env.example"
VENV_IN_UNIT = "/opt/graphql-service/venv/bin/"
VENV_IN_IMAGE = "/opt/venv"
SETTINGS_NAMES = {field.name.upper() for field in dataclasses.fields(Settings)}
# Read by docker compose (interpolation) and by other containers, not by the app.
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
# Set by docker-compose.yml for the app's containers: the .env file must not fight them.
SET_BY_COMPOSE = {"SOCKET_DIR", "METRICS_HOST", "DATABASE_URL", "REDIS_URL"}
SERVICES = {"nginx", "app", "migrate", "postgres", "redis", "prometheus", "grafana"}
MAX_EXPOSURE = 2.0
HELLO = b'{"data":{"hello":"Hello, world!"}}'
# Run a command with W^X enforced (prctl PR_SET_MDWE, Linux 6.3+; kept across execve), as
# the unit's MemoryDenyWriteExecute=yes does. On an older kernel, run it unchanged.
MDWE_EXEC = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:
    print("no PR_SET_MDWE on this kernel: W^X not enforced", file=sys.stderr)
os.execvp(sys.argv[1], sys.argv[1:])
"""


def run(cmd: list[str], *, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def tool(name: str) -> str:
    """A tool from the project venv (hadolint, check-jsonschema) or PATH; fail if missing."""
    found = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    assert found, f"{name} is not installed (make test installs it)"
    return found


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text())


def env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (docker compose .env or systemd EnvironmentFile)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), f"{path.name}:{number}: {line!r}"
        assert key not in values, f"{path.name}:{number}: {key} set twice"
        values[key] = value
    return values


def seconds(value: str) -> float:
    """A compose duration (``30s``, ``1m30s``) or a systemd time span (``35``, ``35s``)."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# --- Dockerfile ----------------------------------------------------------------------------


@dataclasses.dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        [rest] = self.all(keyword)
        return rest

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for rest in self.all("ENV"):
            for token in shlex.split(rest):
                key, sep, value = token.partition("=")
                assert sep, f"ENV {rest!r}: use the KEY=value form"
                values[key] = value
        return values


def dockerfile_stages(text: str = "") -> list[Stage]:
    """The Dockerfile's stages: continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (text or DOCKERFILE.read_text()).splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None, []))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def exec_form(rest: str) -> list[str]:
    """The JSON array of an exec-form CMD (or HEALTHCHECK ... CMD)."""
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(part, str) for part in value), rest
    return value


def healthcheck_command(stage: Stage) -> list[str]:
    _options, sep, command = stage.one("HEALTHCHECK").partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    return exec_form(command)


def image_directories(stage: Stage) -> list[str]:
    """The directories the stage's RUN lines create with ``mkdir -p``."""
    found: list[str] = []
    for rest in stage.all("RUN"):
        for match in re.finditer(r"mkdir -p ([^&;|]+)", rest):
            found += match.group(1).split()
    return found


def test_hadolint_passes() -> None:
    result = run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_non_root_and_secret_free() -> None:
    builder, runtime = dockerfile_stages()
    assert builder.base == runtime.base == "python:3.11-slim"
    assert builder.name == "builder"
    # The builder copies only what the package build needs and installs it non-editable.
    assert builder.all("COPY") == ["pyproject.toml README.md ./", "service ./service"]
    [install] = [rest for rest in builder.all("RUN") if "pip install" in rest]
    assert f"{VENV_IN_IMAGE}/bin/pip install --no-cache-dir ." in install
    assert "-e " not in install
    # The runtime stage takes the venv, nothing else, and installs no system packages.
    assert runtime.all("COPY") == [f"--from=builder {VENV_IN_IMAGE} {VENV_IN_IMAGE}"]
    assert not any("apt" in rest for rest in builder.all("RUN") + runtime.all("RUN"))
    env = runtime.env()
    assert env["PATH"] == f"{VENV_IN_IMAGE}/bin:$PATH"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["SOCKET_DIR"] == DEFAULT_SOCKET_DIR["compose"]
    assert int(env["WORKERS"]) == Settings().workers
    assert Settings.from_env(env).socket_dir == env["SOCKET_DIR"]
    secrets = re.compile(r"SECRET|PASSWORD|TOKEN|PRIVATE|_KEY|DATABASE_URL|REDIS_URL")
    for stage in (builder, runtime):
        assert not [key for key in stage.env() if secrets.search(key)]
        assert not stage.all("ARG"), "build args end up in the image history"
    # A numeric unprivileged user owns the socket directory (0755, traversable by nginx's
    # user in the other container) and the metrics directory with its parent, which the
    # supervisor wipes and re-creates at start.
    user = runtime.one("USER")
    assert re.fullmatch(r"[1-9]\d{3,}:[1-9]\d{3,}", user), user
    uid = user.split(":")[0]
    [setup] = runtime.all("RUN")
    metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    metrics_parent = os.path.dirname(metrics_dir)
    assert f"--uid {uid}" in setup
    assert set(image_directories(runtime)) == {env["SOCKET_DIR"], metrics_dir}
    assert f"chown -R {user} {env['SOCKET_DIR']} {metrics_parent}" in setup
    assert f"chmod 0755 {env['SOCKET_DIR']} {metrics_parent} {metrics_dir}" in setup
    assert runtime.instructions.index(("USER", user)) > runtime.instructions.index(("RUN", setup))
    # Exec form everywhere: the arbiter is PID 1 and receives TERM and HUP itself.
    assert exec_form(runtime.one("CMD")) == ["graphql-service", "serve"]
    assert healthcheck_command(runtime) == ["graphql-service", "healthcheck"]
    assert runtime.one("STOPSIGNAL") == "SIGTERM"


def test_dockerignore_keeps_the_build_inputs_and_drops_secrets_and_caches() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.removeprefix("!").removeprefix("**/")
            parts = path.split("/")
            prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(fnmatch.fnmatch(p, bare) for p in prefixes + parts):
                verdict = not negated
        return verdict

    builder, _ = dockerfile_stages()
    for rest in builder.all("COPY"):
        for source in rest.split()[:-1]:
            assert not ignored(source), f"{source} is copied by the Dockerfile but ignored"
    for path in [
        ".env",
        ".env.local",
        ".venv/bin/python",
        ".git/config",
        "service/__pycache__/x.pyc",
        "service/db/stale.pyc",
        "graphql_service.egg-info/PKG-INFO",
        ".mypy_cache/x",
        ".pytest_cache/x",
        "tests/test_x.py",
    ]:
        assert ignored(path), f"{path} would be sent to the build"
    assert not ignored("service/settings.py")


# --- docker-compose.yml and .env.example ---------------------------------------------------


def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


def test_compose_file_matches_the_compose_spec() -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_start_in_order_with_health_gates() -> None:
    services = compose()["services"]
    assert set(services) == SERVICES
    conditions = {
        name: {dep: spec["condition"] for dep, spec in service["depends_on"].items()}
        for name, service in services.items()
        if isinstance(service.get("depends_on"), dict)
    }
    assert conditions == {
        "nginx": {"app": "service_healthy"},
        "app": {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
        },
        "migrate": {"postgres": "service_healthy"},
    }
    # Every condition service_healthy waits on has a healthcheck.
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    _, runtime = dockerfile_stages()
    assert services["app"]["healthcheck"]["test"] == ["CMD", *healthcheck_command(runtime)]
    # migrate: the same image, one shot.
    app, migrate = services["app"], services["migrate"]
    assert migrate["image"] == app["image"] and migrate["build"] == app["build"]
    assert migrate["command"] == ["graphql-service", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["healthcheck"] == {"disable": True}
    # A stop drains in-flight requests before Docker's SIGKILL.
    graceful = float(env_file(ENV_EXAMPLE)["GRACEFUL_TIMEOUT_S"])
    assert seconds(app["stop_grace_period"]) > graceful


def test_compose_wires_sockets_between_app_and_nginx() -> None:
    data = compose()
    services = data["services"]
    app, nginx = services["app"], services["nginx"]
    _, runtime = dockerfile_stages()
    socket_dir = app["environment"]["SOCKET_DIR"]
    assert socket_dir == runtime.env()["SOCKET_DIR"] == DEFAULT_SOCKET_DIR["compose"]
    assert f"sockets:{socket_dir}" in app["volumes"]
    assert f"sockets:{socket_dir}:ro" in nginx["volumes"], "nginx mounts the sockets read-only"
    assert nginx["ports"] == ["8080:8080"]
    # A tmpfs owned by the image's user, traversable by nginx's worker user.
    uid, gid = runtime.one("USER").split(":")
    options = dict(
        part.split("=", 1) for part in data["volumes"]["sockets"]["driver_opts"]["o"].split(",")
    )
    assert options == {"uid": uid, "gid": gid, "mode": "0755"}
    assert app["environment"]["METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in app and "ports" not in services["postgres"]
    assert "ports" not in services["redis"]


def test_compose_nginx_mounts_the_shared_file_and_files_rendered_for_the_app() -> None:
    nginx = compose()["services"]["nginx"]
    mounts = {
        target: REPO / source
        for source, target, *_ in (volume.split(":") for volume in nginx["volumes"])
        if source.startswith(".")
    }
    main = mounts["/etc/nginx/nginx.conf"]
    assert main == REPO / "nginx/nginx.compose.conf"
    # The main config's include, relative to /etc/nginx, is the shared file shipped in the package.
    assert re.findall(r"(?m)^\s*include (\S+);", main.read_text()) == ["graphql-service.conf"]
    assert mounts["/etc/nginx/graphql-service.conf"].resolve() == SHARED_CONF
    # The per-host files are what `graphql-service nginx-config` writes for .env.example's app.
    env = env_file(ENV_EXAMPLE)
    container_port = int(nginx["ports"][0].split(":")[-1])
    expected = render_host_files(
        variant="compose",
        workers=int(env["WORKERS"]),
        port=container_port,
        max_body_bytes=int(env.get("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
    )
    host_dir = mounts[f"/etc/nginx/{HOST_DIR}"]
    assert {path.name: path.read_text() for path in host_dir.iterdir()} == expected
    # The container's file limit lets nginx's workers apply worker_rlimit_nofile.
    match = re.search(r"(?m)^worker_rlimit_nofile (\d+);", main.read_text())
    assert match
    limit = int(match.group(1))
    assert nginx["ulimits"]["nofile"] == {"soft": limit, "hard": limit}


def test_compose_bind_mounts_exist_and_are_read_only() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is missing"
                assert volume.endswith(":ro"), f"{name}: mount {source} read-only"
    services = compose()["services"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    grafana = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_compose_secrets_come_from_the_env_file() -> None:
    services = compose()["services"]
    grafana_password = services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert grafana_password.startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    assert "${POSTGRES_PASSWORD:?" in services["app"]["environment"]["DATABASE_URL"]
    assert services["app"]["env_file"] == ".env"
    # Every variable the file interpolates is documented in .env.example, with no value
    # for the secrets.
    example = env_file(ENV_EXAMPLE)
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used == COMPOSE_ONLY
    assert all(example[name] == "" for name in used)
    assert example["JWT_SECRET"] == ""


@pytest.mark.parametrize("path", [ENV_EXAMPLE, UNIT_ENV_EXAMPLE], ids=lambda p: p.name)
def test_env_examples_are_documented_settings(path: Path) -> None:
    values = env_file(path)
    allowed = SETTINGS_NAMES | (COMPOSE_ONLY if path == ENV_EXAMPLE else set())
    assert set(values) <= allowed, f"unknown variables: {set(values) - allowed}"
    settings = Settings.from_env(values)  # every value parses
    assert settings.workers >= 1
    # Each variable has a comment right above it or above its group.
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            above = lines[max(0, index - 3) : index]
            assert any(a.startswith("#") for a in above), f"{path.name}: {line} is undocumented"
    if path == ENV_EXAMPLE:
        assert not set(values) & SET_BY_COMPOSE
        assert {"WORKERS", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD", "JWT_SECRET"} <= set(
            values
        )
        assert {"LOG_FORMAT", "GRACEFUL_TIMEOUT_S"} <= set(values)
    else:
        assert "SOCKET_DIR" not in values, "the unit sets SOCKET_DIR"
        assert {"DATABASE_URL", "REDIS_URL", "WORKERS"} <= set(values)


# --- systemd -------------------------------------------------------------------------------


def unit_settings(path: Path = UNIT) -> dict[str, list[str]]:
    """``Key -> [values]`` of the unit's [Service] section (keys may repeat)."""
    section = ""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing (Debian package: systemd)"
    return found


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    # verify insists that the Exec binaries exist: point them at an executable stub.
    stub_dir = tmp_path / "venv-bin"
    stub_dir.mkdir()
    stub = stub_dir / "graphql-service"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"={VENV_IN_UNIT}graphql-service ") == 2  # ExecStartPre, ExecStart
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(VENV_IN_UNIT, f"{stub_dir}/"))
    result = run([systemd_analyze(), "verify", str(unit)])
    # verify exits 0 on unknown keys and bad values, but prints them.
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_systemd_verify_reports_mistakes(tmp_path: Path) -> None:
    """The silence above means something: a typo would be printed."""
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text()
        .replace(VENV_IN_UNIT, "/bin/")
        .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    )
    result = run([systemd_analyze(), "verify", str(unit)])
    assert "NoNewPrivilege" in result.stdout + result.stderr


def test_systemd_security_exposure_is_low() -> None:
    result = run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)])
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Overall exposure level for [\w.-]+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_systemd_unit_fits_the_supervisor_and_nginx() -> None:
    service = unit_settings()

    def one(key: str) -> str:
        [value] = service[key]
        return value

    assert one("Type") == "notify" and one("NotifyAccess") == "main"
    assert one("ExecStart") == f"{VENV_IN_UNIT}graphql-service serve"
    assert one("ExecStartPre") == f"{VENV_IN_UNIT}graphql-service migrate"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("KillMode") == "mixed"
    environment = dict(item.split("=", 1) for item in service["Environment"])
    # The site nginx config proxies to the runtime directory; nginx's user must traverse it.
    assert environment["SOCKET_DIR"] == DEFAULT_SOCKET_DIR["site"]
    # Both directories exist before ExecStartPre (migrate imports the metrics module too).
    runtime_dirs = [f"/run/{name}" for name in one("RuntimeDirectory").split()]
    assert runtime_dirs == [environment["SOCKET_DIR"], environment["PROMETHEUS_MULTIPROC_DIR"]]
    assert one("RuntimeDirectoryMode") == "0755"
    upstream = render_host_files(workers=1, port=8080, variant="site")[UPSTREAM_FILE]
    assert f"server unix:{environment['SOCKET_DIR']}/worker0 " in upstream
    assert environment["SOCKET_DIR"] in (REPO / "nginx/graphql-service.site.conf").read_text()
    # One descriptor per WebSocket in the worker holding it: 10,000 per host, even with
    # WORKERS=1, plus Postgres, Redis and the rest.
    assert int(one("LimitNOFILE")) >= 2 * 10_000
    # The stop timeout covers the drain.
    graceful = float(env_file(UNIT_ENV_EXAMPLE)["GRACEFUL_TIMEOUT_S"])
    assert graceful == Settings().graceful_timeout_s
    assert seconds(one("TimeoutStopSec")) > graceful + 5
    assert one("EnvironmentFile") == "/etc/graphql-service/graphql-service.env"
    assert one("User") == one("Group") == "graphql-service"


# --- the healthcheck command ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status":"ok"}'
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def stub_slot(path: str, status: int) -> Iterator[None]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = _UnixServer(path, handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def slot_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="gsh", dir="/tmp")
    monkeypatch.setenv("SOCKET_DIR", path)
    monkeypatch.setenv("WORKERS", "2")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_healthcheck_passes_when_every_slot_answers(
    slot_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with stub_slot(f"{slot_dir}/worker0", 200), stub_slot(f"{slot_dir}/worker1", 200):
        assert main_healthcheck([]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("slot1", "reason"), [(503, "HTTP 503"), (None, "FileNotFoundError"), ("hung", "timed out")]
)
def test_healthcheck_names_the_failing_slot(
    slot_dir: str, capsys: pytest.CaptureFixture[str], slot1: int | str | None, reason: str
) -> None:
    with contextlib.ExitStack() as stack:
        stack.enter_context(stub_slot(f"{slot_dir}/worker0", 200))
        if isinstance(slot1, int):
            stack.enter_context(stub_slot(f"{slot_dir}/worker1", slot1))
        elif slot1 == "hung":  # accepts connections (backlog) but never answers
            hung = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            hung.bind(f"{slot_dir}/worker1")
            hung.listen(4)
        assert main_healthcheck(["--timeout", "0.2"]) == 1
    err = capsys.readouterr().err
    assert f"slot 1 ({slot_dir}/worker1)" in err and reason in err
    assert "slot 0" not in err


def test_healthcheck_rejects_bad_settings(
    slot_dir: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKERS", "two")
    assert main_healthcheck([]) == 2
    assert "WORKERS" in capsys.readouterr().err


# --- the Dockerfile, replayed outside a container ------------------------------------------


class FakeRoot:
    """Image paths mapped under a temporary directory: ``/opt/venv`` -> ``{root}/opt/venv``."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, image_path: str) -> str:
        assert image_path.startswith("/"), image_path
        return os.path.join(self.root, image_path.lstrip("/"))

    def command(self, text: str) -> str:
        # The only absolute image path the builder's RUN lines use.
        return text.replace(VENV_IN_IMAGE, self.path(VENV_IN_IMAGE))


def build_like_the_builder_stage(stage: Stage, root: FakeRoot, tmp: str) -> None:
    """Replay the builder stage: ENV, WORKDIR, COPY from the repo, RUN with ``sh -c``."""
    # `python` in the image is CPython 3.11; here it is this interpreter.
    shim = os.path.join(tmp, "shim")
    os.makedirs(shim)
    with open(os.path.join(shim, "python"), "w") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    os.chmod(os.path.join(shim, "python"), 0o755)
    env = {"PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
    # This machine's package sources and proxies: what `docker build` would get from its host.
    for name, value in os.environ.items():
        if name.startswith("PIP_") or name.lower() in {"http_proxy", "https_proxy", "no_proxy"}:
            env[name] = value
    workdir = root.path("/")
    os.makedirs(workdir, exist_ok=True)
    for keyword, rest in stage.instructions:
        if keyword == "ENV":
            env.update(Stage("", None, [(keyword, rest)]).env())
        elif keyword == "WORKDIR":
            workdir = root.path(rest)
            os.makedirs(workdir, exist_ok=True)
        elif keyword == "COPY":
            *sources, dest = rest.split()
            target = os.path.join(workdir, dest)
            for source in sources:
                origin = REPO / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    os.makedirs(target, exist_ok=True)
                    shutil.copy(origin, target)
        elif keyword == "RUN":
            result = run(["sh", "-c", root.command(rest)], cwd=workdir, env=env, timeout=500)
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
        else:
            raise AssertionError(f"the replay does not know {keyword} in the builder stage")


def runtime_environment(stage: Stage, root: FakeRoot) -> dict[str, str]:
    """The runtime stage's ENV with image paths mapped under ``root``."""
    env = {"HOME": root.root, "LANG": "C.UTF-8"}
    for key, value in stage.env().items():
        if key == "PATH":
            value = value.replace(VENV_IN_IMAGE, root.path(VENV_IN_IMAGE))
            value = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
        elif value.startswith("/"):
            value = root.path(value)
        env[key] = value
    return env


def stop(proc: subprocess.Popen[bytes] | None) -> int | None:
    """TERM, wait, then SIGKILL the process group; reap. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group
    return proc.returncode


@pytest.mark.timeout(600)
def test_the_image_installs_and_serves_outside_a_container() -> None:
    builder, runtime = dockerfile_stages()
    tmp = tempfile.mkdtemp(prefix="gsd", dir="/tmp")  # short: unix socket paths
    os.chmod(tmp, 0o755)  # nginx's worker user must reach the sockets
    root = FakeRoot(os.path.join(tmp, "root"))
    database_url = dbutil.fresh_url()
    serve: subprocess.Popen[bytes] | None = None
    nginx: PrivateNginx | None = None
    log_path = os.path.join(tmp, "serve.log")
    try:
        build_like_the_builder_stage(builder, root, tmp)
        # COPY --from=builder /opt/venv /opt/venv: the same path in the fake root.
        env = runtime_environment(runtime, root)
        # The directories the runtime stage makes (its user and chown need root: not here).
        for directory in image_directories(runtime):
            os.makedirs(root.path(directory), mode=0o755)
        for directory in (root.root, env["SOCKET_DIR"]):
            os.chmod(directory, 0o755)
        workdir = root.path(runtime.one("WORKDIR"))
        os.makedirs(workdir, exist_ok=True)
        env |= {
            # What docker-compose.yml adds, pointed at this machine's services.
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL,
            "METRICS_PORT": str(free_port()),
            "GRACEFUL_TIMEOUT_S": "10",
        }
        venv_bin = root.path(f"{VENV_IN_IMAGE}/bin")

        # The code that runs is the installed copy, not this checkout.
        where = run(
            [f"{venv_bin}/python", "-c", "import service; print(service.__file__)"],
            cwd=workdir,
            env=env,
        )
        assert where.stdout.startswith(root.path(VENV_IN_IMAGE)), where.stdout + where.stderr

        # The compose migrate service: the same image, `graphql-service migrate`.
        migrate = run(
            [sys.executable, "-c", MDWE_EXEC, "graphql-service", "migrate"],
            cwd=workdir,
            env=env,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        assert dbutil.database_exists(database_url)

        # The image's CMD, under W^X like the systemd unit.
        command = exec_form(runtime.one("CMD"))
        with open(log_path, "wb") as log:
            serve = subprocess.Popen(
                [sys.executable, "-c", MDWE_EXEC, *command],
                cwd=workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        settings = Settings.from_env(env)

        def every_slot_answers() -> bool:
            assert serve is not None and serve.poll() is None, "serve exited"
            for k in range(settings.workers):
                conn = UnixHTTPConnection(settings.slot_path(k), 2.0)
                try:
                    if request(conn, "GET", "/healthz")[0] != 200:
                        return False
                finally:
                    conn.close()
            return True

        poll(every_slot_answers, 60, "every worker slot of the installed service")
        for k in range(settings.workers):
            assert os.stat(settings.slot_path(k)).st_mode & 0o777 == 0o666

        # `pip install .` ships the nginx files that PrivateNginx (`graphql-service run`) reads.
        shipped = run(
            [f"{venv_bin}/python", "-c", "import service.supervisor.nginx as n; print(n.CONF_DIR)"],
            cwd=workdir,
            env=env,
        )
        conf_dir = Path(shipped.stdout.strip())
        assert conf_dir.is_relative_to(root.path(VENV_IN_IMAGE)), shipped.stdout + shipped.stderr
        for packaged in (SHARED_CONF, DEV_MAIN_CONF):
            assert (conf_dir / packaged.name).read_text() == packaged.read_text()

        nginx = PrivateNginx(
            workers=settings.workers,
            port=free_port(),
            socket_dir=settings.socket_dir,
            prefix_dir=os.path.join(tmp, "nginx"),
        )
        nginx.start()
        nginx.wait_ready(15)
        conn = http.client.HTTPConnection("127.0.0.1", nginx.port, timeout=10)
        try:
            status, _, body = request(conn, "POST", "/graphql", {"query": "{ hello }"})
            assert (status, body) == (200, HELLO)
            status, _, body = request(conn, "GET", "/readyz")
            assert status == 200, body
        finally:
            conn.close()

        # The image's HEALTHCHECK, with the container's environment.
        health = run(healthcheck_command(runtime), cwd=workdir, env=env, timeout=30)
        assert health.returncode == 0, health.stdout + health.stderr

        # TERM drains and stops the workers; then the healthcheck fails, naming a slot.
        assert stop(serve) == 0
        health = run(healthcheck_command(runtime), cwd=workdir, env=env, timeout=30)
        assert health.returncode == 1
        assert "slot 0" in health.stderr

        # LOG_FORMAT=json from the image: the supervisor and the workers write JSON lines.
        with open(log_path, "rb") as f:
            events = [json.loads(line) for line in f if line.startswith(b"{")]
        assert any(event.get("slot") == 0 for event in events)
        assert all("event" in event and "level" in event for event in events)
    except BaseException:
        with contextlib.suppress(OSError), open(log_path, "rb") as f:
            print(f.read().decode(errors="replace")[-8000:])
        raise
    finally:
        if nginx is not None:
            nginx.stop(10)
        stop(serve)
        with contextlib.suppress(Exception):
            dbutil.drop_database(database_url)
        shutil.rmtree(tmp, ignore_errors=True)
