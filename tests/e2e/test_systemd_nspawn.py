"""The shipped systemd deployment, run for real: systemd as PID 1 in a systemd-nspawn container.

The machine is Debian bookworm (``support/nspawn.py``: built once with debootstrap, cached in
/var/cache/graphql-service-nspawn, booted with a throwaway overlay). The project is installed by
replaying the shell block of the README's systemd section line by line, as a new user would
(system user, venv under /opt, env file under /etc, the unit, Debian's nginx with the site file);
``$EDITOR`` is a script making the edits those lines ask for. The only difference: ``pip`` installs
offline, from a cached wheelhouse.

The container runs in a network namespace of its own (``support/netns.py``), so its nginx takes
port 8080 and the arbiter 9400 as shipped. Postgres and Redis are this machine's: they listen on
127.0.0.1 only, so the container reaches them through TCP forwarders on the bridge address.

Then, through the container's nginx: the unit becomes active only once every worker slot answers;
``ExecStartPre`` migrated; the journal holds the JSON lines; a reload under load fails no request;
a worker killed with SIGKILL comes back in its slot; the sandbox holds (a probe unit with the
shipped unit's settings, and the service's own processes); a stop drains an in-flight request and
ends within ``GRACEFUL_TIMEOUT_S``. The tests run in file order on one installed machine.

``test_ready_only_once_every_slot_serves`` checks the supervisor's readiness notification without
a container, with a notification socket of its own.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from service.supervisor.healthcheck import UnixHTTPConnection
from support import dbutil, netns, nspawn
from support.load import HelloLoad
from support.polling import poll_until
from support.stack import Stack, request

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
README_SECTION = "### systemd (one host, nginx from the distribution)"
UNIT = "graphql-service.service"
WORKERS = 2  # as in the README's install lines and the env file
GRACEFUL_TIMEOUT_S = 20.0  # the env file's value
STAGE = "/mnt/graphql-service"  # bind-mounted read-only: the checkout, $EDITOR, the probe
WHEELS = "/var/cache/graphql-service-wheels"
SOCKET_DIR = "/run/graphql-service"
HELLO = {"data": {"hello": "Hello, world!"}}
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"  # journal MESSAGE_ID of "Started <unit>"

# $EDITOR for the README's install lines: the edits they ask for, made with sed.
EDITOR = r"""#!/bin/sh
set -e
case "$1" in
/etc/graphql-service/graphql-service.env)
    sed -i -e "s|^DATABASE_URL=.*|DATABASE_URL=$GS_DATABASE_URL|" \
           -e "s|^REDIS_URL=.*|REDIS_URL=$GS_REDIS_URL|" "$1" ;;
/etc/nginx/nginx.conf)
    sed -i -e 's/^\(\s*worker_connections\).*/\1 32768;/' \
           -e '/^worker_processes/a worker_rlimit_nofile 65536;' "$1" ;;
*)
    echo "the README asks for an edit this test does not know: $1" >&2; exit 1 ;;
esac
"""

# Runs as a unit with the installed unit's settings (a copy plus a drop-in that only changes
# what it runs): prints what its sandbox lets it do.
PROBE = r"""
import ctypes, errno, json, mmap, os, resource, socket

libc = ctypes.CDLL(None, use_errno=True)

def outcome(call):
    try:
        call()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"

def c_outcome(rc):
    return "ok" if rc != -1 else errno.errorcode.get(ctypes.get_errno(), "?")

def read_only(path):
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)

def setuid_bit():
    path = "/run/gs-sandbox-probe/f"
    open(path, "w").close()
    os.chmod(path, 0o4755)

status = dict(line.split(":", 1) for line in open("/proc/self/status"))
out = {
    "uid": os.getuid(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    "seccomp": status["Seccomp"].strip(),
    "cap_eff": status["CapEff"].strip(),
    "cap_bnd": status["CapBnd"].strip(),
    "uid_map": open("/proc/self/uid_map").read().split(),
    "mmap_wx": outcome(lambda: mmap.mmap(-1, 4096, prot=7)),
    "read_only": {p: read_only(p) for p in ("/", "/usr", "/etc", "/opt/graphql-service", "/var")},
    "runtime_dir_read_only": read_only("/run/gs-sandbox-probe"),
    "tmp": sorted(os.listdir("/tmp")),
    "home": outcome(lambda: os.listdir("/home")),
    "sched_setaffinity": outcome(lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
    "setuid_bit": outcome(setuid_bit),
    "af_netlink": outcome(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
    "af_inet": outcome(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()),
    "personality": c_outcome(libc.personality(0x0400000)),
    "proc_1": os.path.exists("/proc/1"),
    "proc_sys": os.path.exists("/proc/sys"),
    "sys_read_only": read_only("/sys"),
    "dev": sorted(os.listdir("/dev")),
    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    "unshare_user": c_outcome(libc.unshare(0x10000000)),
}
print("SANDBOX-PROBE " + json.dumps(out), flush=True)
"""

PROBE_DROP_IN = f"""[Unit]
Description=graphql-service.service's sandbox, probed
[Service]
Type=oneshot
ExecStartPre=
ExecStart=
ExecStart=/opt/graphql-service/venv/bin/python {STAGE}/sandbox_probe.py
ExecReload=
Restart=no
RuntimeDirectory=
RuntimeDirectory=gs-sandbox-probe
"""


def readme_install_lines() -> str:
    """The shell block of the README's systemd section."""
    text = (REPO / "README.md").read_text()
    section = text.split(README_SECTION, 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no ```sh block under {README_SECTION!r}"
    return match.group(1)


@dataclass
class Machine:
    container: nspawn.Container
    address: str  # of the container's network namespace; its nginx listens on :8080
    database_url: str  # as this machine reaches it (127.0.0.1)
    build_seconds: float | None

    def sh(self, script: str, **kwargs: Any) -> str:
        return self.container.run(["sh", "-ec", script], **kwargs).stdout

    def show(self, *properties: str) -> dict[str, str]:
        out = self.container.run(
            ["systemctl", "show", UNIT, *(f"--property={p}" for p in properties)]
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str = UNIT) -> list[dict[str, Any]]:
        out = self.container.run(["journalctl", "-u", unit, "-o", "json", "--no-pager"]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def app_lines(self) -> list[dict[str, Any]]:
        """The service's own log lines (its stderr), parsed as JSON objects."""
        lines = []
        for entry in self.journal():
            message = entry.get("MESSAGE")
            if entry.get("SYSLOG_IDENTIFIER") == "graphql-service" and isinstance(message, str):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(message))
        return lines

    def slot_pid(self, k: int) -> int:
        """The pid (in the container) of the worker answering on slot ``k``."""
        conn = UnixHTTPConnection(self.container.path(f"{SOCKET_DIR}/worker{k}"), 2.0)
        try:
            status, _, body = request(conn, "GET", "/healthz")
        finally:
            conn.close()
        assert status == 200, (status, body)
        return int(json.loads(body)["pid"])

    def slot_pids(self) -> dict[int, int]:
        return {k: self.slot_pid(k) for k in range(WORKERS)}

    def http(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address, 8080, timeout=timeout)

    def graphql(self, query: str, **headers: str) -> tuple[int, Any]:
        conn = self.http()
        try:
            status, _, body = request(conn, "POST", "/graphql", {"query": query}, headers)
        finally:
            conn.close()
        return status, json.loads(body) if body.startswith(b"{") else body


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    missing = nspawn.missing_tools() + netns.missing_tools()
    if missing:
        pytest.skip(f"systemd-nspawn cannot run here: missing {', '.join(missing)}")
    try:
        rootfs, build_seconds = nspawn.ensure_rootfs()
        wheels = nspawn.wheelhouse(REPO)
    except nspawn.Unavailable as exc:
        pytest.skip(str(exc))
    stage = Path(tempfile.mkdtemp(prefix="gs-nspawn-"))
    stage.chmod(0o755)  # the probe runs as the service's user
    database_url = dbutil.fresh_url()
    network = netns.Network().start()
    container = None
    try:
        nspawn.stage_checkout(REPO, stage / "checkout")
        (stage / "editor").write_text(EDITOR)
        (stage / "editor").chmod(0o755)
        (stage / "sandbox_probe.py").write_text(PROBE)
        host = network.add_host("m")
        network.forward(5432)
        network.forward(6379)
        inside_url = dbutil.url_for(
            dbutil.database_name(database_url), f"postgresql://postgres@{network.gateway}:5432/"
        )
        container = nspawn.Container(
            rootfs,
            log_path=stage / "nspawn.log",
            netns_path=host.netns_path,
            binds_ro={str(wheels): WHEELS, str(stage): STAGE},
        )
        try:
            container.start()
        except nspawn.Unavailable as exc:
            pytest.skip(str(exc))
        machine = Machine(container, host.address, database_url, build_seconds)
        # A checkout of the project, then the README's lines, each echoed (sh -x) and checked.
        install = container.run(
            [
                "sh",
                "-exc",
                f"cp -a {STAGE}/checkout /root/graphql-service\n"
                f"cd /root/graphql-service\n{readme_install_lines()}",
            ],
            env={
                "EDITOR": f"{STAGE}/editor",
                "PIP_NO_INDEX": "1",
                "PIP_FIND_LINKS": WHEELS,
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "GS_DATABASE_URL": inside_url,
                "GS_REDIS_URL": f"redis://{network.gateway}:6379/0",
            },
            timeout=300,
            check=False,
        )
        assert install.returncode == 0, install.stdout + install.stderr
        yield machine
    finally:
        if container is not None:
            container.stop()
        network.stop()
        with contextlib.suppress(Exception):
            dbutil.drop_database(database_url)
        shutil.rmtree(stage, ignore_errors=True)


# --- without a container: the notification itself --------------------------------------------


def test_ready_only_once_every_slot_serves() -> None:
    """READY=1 reaches the notification socket only when every slot answers, and only once."""
    stack = Stack(workers=3)
    notify_path = os.path.join(stack.dir, "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(30)
    proc = None
    try:
        from service.db.migrations import ensure_database, migrate_sync

        ensure_database(stack.database_url)
        migrate_sync(stack.database_url)
        with open(stack.log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.supervisor.cli", "serve"],
                env={**stack.env, "NOTIFY_SOCKET": notify_path},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        message = listener.recv(4096).decode()
        # Checked once, at that instant: no waiting for a slot that is not there yet.
        assert len(stack.slot_pids()) == 3, stack.log()
        assert message.split("\n") == ["READY=1", "STATUS=serving 3 worker slots"], message
        # gunicorn's own "READY=1 ... arbiter booted" never comes, before or after.
        listener.settimeout(0.5)
        with pytest.raises(TimeoutError):
            listener.recv(4096)
    finally:
        listener.close()
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        stack.stop()


# --- in the container, in this order ----------------------------------------------------------


@pytest.mark.timeout(600)  # the first run on a machine builds the root file system (~1 min)
def test_readme_install_starts_active_only_once_every_slot_answers(machine: Machine) -> None:
    # `systemctl enable --now` (the README's last line) returned: every slot answers right away.
    assert machine.slot_pids().keys() == set(range(WORKERS))
    state = machine.show("ActiveState", "SubState", "StatusText", "Type", "NRestarts")
    assert state == {
        "ActiveState": "active",
        "SubState": "running",
        "StatusText": f"serving {WORKERS} worker slots",
        "Type": "notify",
        "NRestarts": "0",
    }
    # systemd logged "Started" after every slot's worker logged that it listens.
    started = [
        int(e["_SOURCE_REALTIME_TIMESTAMP"])
        for e in machine.journal()
        if e.get("MESSAGE_ID") == UNIT_STARTED
    ]
    listening = {
        line["event"]: line["timestamp"]
        for line in machine.app_lines()
        if line["event"].startswith("worker slot ") and " listening on " in line["event"]
    }
    assert len(started) == 1 and len(listening) == WORKERS, (started, listening)
    for event, stamp in listening.items():
        listened_us = _epoch_us(stamp)
        assert listened_us < started[0], f"active at {started[0]}, before {event!r} at {stamp}"
    assert machine.graphql("{ hello }") == (200, HELLO)

    # And again on a restart (ExecStartPre runs again; nothing left to migrate).
    machine.container.run(["systemctl", "restart", UNIT])
    assert machine.slot_pids().keys() == set(range(WORKERS))
    assert machine.graphql("{ hello }") == (200, HELLO)


def _epoch_us(iso: str) -> int:
    """structlog's ISO timestamp (UTC, microseconds) as microseconds since the epoch."""
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1_000_000)


def test_exec_start_pre_migrated_before_the_supervisor_started(machine: Machine) -> None:
    assert dbutil.database_exists(machine.database_url)
    conn = psycopg2.connect(machine.database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('notes') IS NOT NULL")
            assert cur.fetchone() == (True,)
    finally:
        conn.close()
    messages = [str(e.get("MESSAGE", "")) for e in machine.journal()]
    migrated = [i for i, m in enumerate(messages) if m.startswith("migrations applied: ")]
    booted = [i for i, m in enumerate(messages) if '"Starting gunicorn' in m]
    # Two starts (install, restart): each migrate ran before its supervisor.
    assert len(migrated) == len(booted) == 2, messages
    assert migrated[0] < booted[0] < migrated[1] < booted[1]
    assert messages[migrated[0]] != "migrations applied: none (up to date)"
    assert messages[migrated[1]] == "migrations applied: none (up to date)"


def test_journal_holds_the_json_lines(machine: Machine) -> None:
    request_id = f"nspawn-{os.getpid()}-{time.monotonic_ns()}"
    assert machine.graphql("{ hello }", **{"X-Request-ID": request_id}) == (200, HELLO)

    def logged() -> dict[str, Any] | None:
        for line in machine.app_lines():
            if line.get("request_id") == request_id:
                return line
        return None

    line = poll_until(logged, timeout_s=10, what="the request's line in the journal")
    assert line is not None
    assert line["status"] == 200 and line["path"] == "/graphql", line
    assert {"timestamp", "level", "event", "pid", "slot", "duration_ms"} <= line.keys(), line
    lines = machine.app_lines()
    assert all({"event", "level", "timestamp"} <= set(each) for each in lines)
    # Every line the service wrote is a JSON object (ExecStartPre's one summary line aside).
    raw = [
        e["MESSAGE"]
        for e in machine.journal()
        if e.get("SYSLOG_IDENTIFIER") == "graphql-service"
        and not str(e.get("MESSAGE", "")).startswith("migrations applied: ")
    ]
    assert len(raw) == len(lines), [m for m in raw if not str(m).startswith("{")]


def test_reload_under_load_fails_no_request(machine: Machine) -> None:
    before = machine.slot_pids()
    main_pid = machine.show("MainPID")["MainPID"]
    migrations = _migrate_runs(machine)
    with HelloLoad(lambda: machine.http(timeout=10)) as load:
        poll_until(lambda: load.ok() >= 200, timeout_s=20, what="load before the reload")
        machine.container.run(["systemctl", "reload", UNIT])
        # Every slot is served by the new generation, and the old one has exited.
        poll_until(
            lambda: all(machine.slot_pid(k) != before[k] for k in range(WORKERS)),
            timeout_s=30,
            what="the new generation in every slot",
        )
        gone = " && ".join(f"! test -e /proc/{pid}" for pid in before.values())
        poll_until(
            lambda: machine.container.run(["sh", "-c", gone], check=False).returncode == 0,
            timeout_s=GRACEFUL_TIMEOUT_S + 5,
            what="the old workers to exit",
        )
        served = load.ok()
        poll_until(lambda: load.ok() >= served + 200, timeout_s=20, what="load after the reload")
    assert set(load.outcomes) == {"ok"}, load.outcomes
    state = machine.show("MainPID", "ActiveState", "NRestarts")
    assert state == {"MainPID": main_pid, "ActiveState": "active", "NRestarts": "0"}
    assert _migrate_runs(machine) == migrations  # a reload does not run ExecStartPre


def _migrate_runs(machine: Machine) -> int:
    return sum(
        str(e.get("MESSAGE", "")).startswith("migrations applied: ") for e in machine.journal()
    )


def test_a_killed_worker_is_respawned_into_its_slot(machine: Machine) -> None:
    main_pid = machine.show("MainPID")["MainPID"]
    before = machine.slot_pids()
    machine.container.run(["kill", "-KILL", str(before[0])])
    after = poll_until(
        lambda: (pids := _try(machine.slot_pids)) and pids[0] != before[0] and pids,
        timeout_s=30,
        what="a new worker in slot 0",
    )
    assert after[1] == before[1], "the other slot's worker was left alone"
    assert machine.show("MainPID", "ActiveState", "NRestarts") == {
        "MainPID": main_pid,
        "ActiveState": "active",
        "NRestarts": "0",
    }
    assert machine.graphql("{ hello }") == (200, HELLO)
    # The arbiter saw it (its later lines of the same templates may be folded by RepeatFilter).
    killed = f"Worker (pid:{before[0]}) was sent SIGKILL! Perhaps out of memory?"
    poll_until(
        lambda: any(line["event"] == killed for line in machine.app_lines()),
        timeout_s=10,
        what=f"{killed!r} in the journal",
    )


def _try(call: Any) -> Any:
    with contextlib.suppress(OSError, AssertionError, http.client.HTTPException, ValueError):
        return call()
    return None


def test_the_sandbox_holds_while_the_service_serves(machine: Machine) -> None:
    run = machine.container.run
    uid = int(run(["id", "-u", "graphql-service"]).stdout)
    _, hard_nofile = _nofile(run(["cat", "/proc/1/limits"]).stdout)
    # The service's own processes: the arbiter and every worker, respawned ones included.
    cgroup = machine.show("ControlGroup")["ControlGroup"]
    pids = run(["sh", "-c", f"cat /sys/fs/cgroup/systemd{cgroup}/cgroup.procs"]).stdout.split()
    assert len(pids) == 1 + WORKERS, pids
    for pid in pids:
        status = dict(
            line.split(":", 1) for line in run(["cat", f"/proc/{pid}/status"]).stdout.splitlines()
        )
        assert status["Uid"].split()[0] == str(uid)
        assert status["NoNewPrivs"].strip() == "1"
        assert status["Seccomp"].strip() == "2"  # SystemCallFilter, MemoryDenyWriteExecute, ...
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        mounts = run(["cat", f"/proc/{pid}/mountinfo"]).stdout.splitlines()
        root = next(m for m in mounts if m.split()[4] == "/")
        assert "ro" in root.split()[5].split(","), root  # ProtectSystem=strict
        # LimitNOFILE=65536, or the container's hard limit when that is lower (see the README).
        limits = _nofile(run(["cat", f"/proc/{pid}/limits"]).stdout)
        assert limits == (min(65536, hard_nofile),) * 2, limits

    # nginx (Debian's nginx.service, edited as the README says) gets worker_rlimit_nofile 65536
    # when the hard limit allows it; below that it logs why not (see the README).
    nginx_worker = run(["pgrep", "-f", "nginx: worker"]).stdout.split()[0]
    nginx_soft, _ = _nofile(run(["cat", f"/proc/{nginx_worker}/limits"]).stdout)
    if hard_nofile >= 65536:
        assert nginx_soft == 65536
    else:
        refused = "setrlimit(RLIMIT_NOFILE, 65536) failed (1: Operation not permitted)"
        assert refused in run(["cat", "/var/log/nginx/error.log"]).stdout

    # A probe with the installed unit's settings: a copy of it plus a drop-in for what it runs.
    run(["touch", "/tmp/outside-the-sandbox", "/home/outside-the-sandbox"])
    run(["cp", f"/etc/systemd/system/{UNIT}", "/etc/systemd/system/gs-sandbox-probe.service"])
    run(["mkdir", "-p", "/etc/systemd/system/gs-sandbox-probe.service.d"])
    run(
        ["sh", "-c", "cat > /etc/systemd/system/gs-sandbox-probe.service.d/probe.conf"],
        input=PROBE_DROP_IN,
    )
    run(["systemctl", "daemon-reload"])
    run(["systemctl", "start", "gs-sandbox-probe.service"])
    out = run(["journalctl", "-u", "gs-sandbox-probe", "-o", "cat", "--no-pager"]).stdout
    probe = json.loads(out.split("SANDBOX-PROBE ", 1)[1].splitlines()[0])
    assert probe["uid"] == uid
    assert (probe["no_new_privs"], probe["seccomp"]) == ("1", "2")  # NoNewPrivileges
    assert int(probe["cap_eff"], 16) == int(probe["cap_bnd"], 16) == 0  # CapabilityBoundingSet=
    assert probe["uid_map"] == ["0", "0", "1", str(uid), str(uid), "1"]  # PrivateUsers
    assert probe["mmap_wx"] == "EPERM"  # MemoryDenyWriteExecute
    assert all(probe["read_only"].values()), probe["read_only"]  # ProtectSystem=strict
    assert probe["runtime_dir_read_only"] is False  # RuntimeDirectory stays writable
    assert probe["tmp"] == []  # PrivateTmp
    assert probe["home"] == "EACCES"  # ProtectHome
    assert probe["sched_setaffinity"] == "EPERM"  # SystemCallFilter=~@resources
    assert probe["setuid_bit"] == "EPERM"  # RestrictSUIDSGID
    assert (probe["af_netlink"], probe["af_inet"]) == ("EAFNOSUPPORT", "ok")
    assert probe["personality"] == "EPERM"  # LockPersonality
    assert (probe["proc_1"], probe["proc_sys"]) == (False, False)  # ProtectProc, ProcSubset
    assert probe["sys_read_only"] is True  # ProtectKernelTunables
    # PrivateDevices: a /dev of its own, without the container's /dev/net/tun.
    container_dev = run(["ls", "/dev"]).stdout.split()
    assert "net" in container_dev and "net" not in probe["dev"], (container_dev, probe["dev"])
    assert probe["unshare_user"] == "EPERM"  # RestrictNamespaces
    assert probe["nofile"] == [min(65536, hard_nofile)] * 2
    # The service kept serving through all of it.
    assert machine.graphql("{ hello }") == (200, HELLO)


def _nofile(limits: str) -> tuple[int, int]:
    """(soft, hard) "Max open files" of a /proc/<pid>/limits text."""
    match = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits)
    assert match, limits
    return int(match.group(1)), int(match.group(2))


def test_stop_drains_an_in_flight_request_within_the_graceful_timeout(machine: Machine) -> None:
    """A query waits on a table lock held here; the stop lets it finish, then ends."""
    lock = psycopg2.connect(machine.database_url, connect_timeout=5)
    outcome: dict[str, Any] = {}

    def in_flight() -> None:
        outcome["result"] = machine.graphql("{ notes(first: 1) { id } }")

    client = threading.Thread(target=in_flight)
    try:
        with lock.cursor() as cur:
            cur.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        client.start()
        database = dbutil.database_name(machine.database_url)
        poll_until(
            lambda: dbutil.admin_query(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND wait_event_type = 'Lock'",
                (database,),
            )[0][0],
            timeout_s=15,
            what="the query to wait on the lock",
        )
        terms = _terms(machine)
        logged_before = len(machine.journal())
        stop_began = time.monotonic()
        machine.container.run(["systemctl", "stop", "--no-block", UNIT])
        # The arbiter has the TERM and passes it on to the workers; one of them holds the query.
        poll_until(lambda: _terms(machine) > terms, timeout_s=10, what="the arbiter's TERM")
        assert machine.show("ActiveState")["ActiveState"] == "deactivating"
    finally:
        lock.rollback()  # releases the lock: the query finishes
        lock.close()
    client.join(30)
    assert outcome["result"][0] == 200 and "errors" not in outcome["result"][1], outcome
    poll_until(
        lambda: machine.show("ActiveState")["ActiveState"] == "inactive",
        timeout_s=GRACEFUL_TIMEOUT_S + 10,
        what="the stop",
    )
    took = time.monotonic() - stop_began
    assert took < GRACEFUL_TIMEOUT_S, f"the stop took {took:.1f} s"
    assert machine.show("Result")["Result"] == "success"  # not "timeout", nothing SIGKILLed
    messages = [str(e.get("MESSAGE", "")) for e in machine.journal()[logged_before:]]
    assert not [m for m in messages if "SIGKILL" in m or "Killing process" in m], messages
    assert machine.container.run(["test", "-e", SOCKET_DIR], check=False).returncode == 1


def _terms(machine: Machine) -> int:
    return sum(line["event"] == "Handling signal: term" for line in machine.app_lines())
