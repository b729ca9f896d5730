"""A Debian machine with systemd as PID 1, on this machine: ``systemd-nspawn`` over a cached root.

The root file system is built once per machine with ``debootstrap`` and cached outside the
repository (``CACHE_DIR``, default ``/var/cache/graphql-service-nspawn``); later runs reuse it.
It is Debian bookworm (minbase) with systemd, dbus, procps, python3 (3.11), python3-venv and
Debian's nginx, plus the ``/etc/hosts`` that every installed Debian has and debootstrap does not
write. A container boots it with ``--volatile=overlay``: whatever a test changes lands in a tmpfs
overlay and is gone when the container stops, so the cache stays pristine.

The project is installed into a container from source, offline: ``wheelhouse()`` caches the
wheels of its dependencies (and of its build backend), built with this venv's pip, keyed by the
dependency lists of ``pyproject.toml``; inside, ``pip install .`` runs with ``PIP_NO_INDEX`` and
``PIP_FIND_LINKS`` pointing at them.

This machine's PID 1 is not systemd, hence ``--register=no --keep-unit`` (no machined, no scope
unit). nspawn then splits the cgroup it runs in into ``payload`` and ``supervisor``; each
container gets a cgroup of its own first (``gs-nspawn-<pid>-<hex>``) so that two containers, or
two test runs, never share one. Commands run inside with ``nsenter`` into every namespace of the
container's PID 1 (``Container.run``).

``Unavailable`` says why a container cannot run here (not root, a tool missing, no network for
the first build, nspawn refusing to start): tests skip with that reason.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from support.polling import poll_until

CACHE_DIR = Path(
    os.environ.get("GRAPHQL_SERVICE_NSPAWN_CACHE", "/var/cache/graphql-service-nspawn")
)
SUITE = "bookworm"
MIRROR = os.environ.get("GRAPHQL_SERVICE_NSPAWN_MIRROR", "http://deb.debian.org/debian")
#: What the README's systemd section expects of the host: systemd (and dbus for systemctl),
#: python3.11 with venv, nginx from the distribution, and procps for the unit's ExecReload
#: (/bin/kill; every Debian but a minimal one has it).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "nginx")
#: Written by the Debian installer, not by debootstrap. Without it, resolving 127.0.0.1 (which
#: http.server does for the metrics endpoint) waits for DNS timeouts.
ETC_HOSTS = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
#: Bumped when the way the root is built changes, so the cache is rebuilt.
LAYOUT_VERSION = 1
#: The checkout as a source tree: what ``pip install .`` and the README's install lines read.
CHECKOUT_PARTS = ("pyproject.toml", "README.md", "service", "systemd", "nginx")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unavailable(Exception):
    """systemd-nspawn cannot run here; the message says why (a test's skip reason)."""


def missing_tools() -> list[str]:
    missing = [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if not shutil.which(t)]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(
    argv: Sequence[str], *, timeout: float, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder at a time per machine (other test runs wait, then reuse what it built)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def rootfs_dir() -> Path:
    return CACHE_DIR / f"{SUITE}-{_key(SUITE, PACKAGES, ETC_HOSTS, LAYOUT_VERSION)}"


def _mirror_reachable() -> str | None:
    """``None`` when the Debian mirror answers, else why not."""
    url = f"{MIRROR}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def ensure_rootfs() -> tuple[Path, float | None]:
    """The cached root file system, built first if missing.

    Returns its path and how long the build took (``None`` when it was already cached).
    """
    final = rootfs_dir()
    if (final / "complete.json").exists():
        return final / "rootfs", None
    missing = missing_tools()
    if missing:
        raise Unavailable(f"missing: {', '.join(missing)} (make system-deps installs the tools)")
    with _cache_lock():
        if (final / "complete.json").exists():
            return final / "rootfs", None
        why = _mirror_reachable()
        if why is not None:
            raise Unavailable(f"no cached root file system and the mirror is unreachable: {why}")
        shutil.rmtree(final, ignore_errors=True)
        final.mkdir(parents=True)
        partial = final / "rootfs.partial"
        started = time.monotonic()
        result = _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(partial),
                MIRROR,
            ],
            timeout=1200,
        )
        if result.returncode != 0:
            log = (partial / "debootstrap" / "debootstrap.log").read_text(errors="replace")
            raise RuntimeError(f"debootstrap failed:\n{result.stderr[-3000:]}\n{log[-3000:]}")
        (partial / "etc/hosts").write_text(ETC_HOSTS)
        for leftover in (partial / "var/cache/apt/archives").glob("*.deb"):
            leftover.unlink()
        partial.rename(final / "rootfs")
        seconds = time.monotonic() - started
        (final / "complete.json").write_text(
            json.dumps({"suite": SUITE, "packages": PACKAGES, "build_seconds": round(seconds, 1)})
        )
        return final / "rootfs", seconds


def stage_checkout(repo: Path, dest: Path) -> Path:
    """Copy what a source install reads (``CHECKOUT_PARTS``) from ``repo`` into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for part in CHECKOUT_PARTS:
        origin = repo / part
        if origin.is_dir():
            shutil.copytree(origin, dest / part, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, dest / part)
    return dest


def wheelhouse(repo: Path) -> Path:
    """Wheels of the project's dependencies and build backend, cached by their requirements."""
    if sys.version_info[:2] != (3, 11):
        raise Unavailable("the wheelhouse is built with this venv's pip: needs Python 3.11")
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    requirements = sorted(pyproject["project"]["dependencies"])
    build_requires = sorted(pyproject["build-system"]["requires"])
    final = CACHE_DIR / f"wheels-{_key(requirements, build_requires, sys.implementation.name)}"
    if final.is_dir():
        return final
    with _cache_lock():
        if final.is_dir():
            return final
        partial = CACHE_DIR / f"{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        result = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--disable-pip-version-check",
                "-q",
                "-w",
                str(partial),
                *requirements,
                *build_requires,
                "wheel",
            ],
            timeout=600,
        )
        if result.returncode != 0:
            raise Unavailable(f"could not build the wheelhouse: {result.stderr[-2000:]}")
        partial.rename(final)
        return final


# --- cgroups ------------------------------------------------------------------------------------


def _own_cgroups() -> list[Path]:
    """Where this process sits in the cgroup hierarchies nspawn uses (cgroup2, name=systemd)."""
    mounts: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.partition(" - ")
            fstype, _source, options = after.split()[:3]
            mount_point = Path(before.split()[4])
            if fstype == "cgroup2":
                mounts.setdefault("", mount_point)
            elif fstype == "cgroup" and "name=systemd" in options.split(","):
                mounts.setdefault("name=systemd", mount_point)
    found = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers in mounts:
                found.append(mounts[controllers] / path.lstrip("/"))
    return found


def _cgroup_empty(path: Path) -> bool:
    return all(
        not (p / "cgroup.procs").read_text().strip()
        for p in [path, *path.rglob("*")]
        if (p / "cgroup.procs").exists()
    )


def _remove_cgroup_tree(path: Path) -> None:
    if not path.is_dir():
        return
    with contextlib.suppress(TimeoutError, OSError):
        # The kernel takes a moment to drop killed processes from their cgroup.
        poll_until(lambda: _cgroup_empty(path), timeout_s=10, what=f"{path} to empty")
    for child in sorted(
        (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _sweep_stale_cgroups(parent: Path) -> None:
    """Remove the cgroups of containers whose test run was killed (its pid is gone)."""
    with contextlib.suppress(OSError):
        for child in parent.glob("gs-nspawn-*-*"):
            owner = child.name.split("-")[2]
            if owner.isdigit() and not Path(f"/proc/{owner}").exists() and _cgroup_empty(child):
                _remove_cgroup_tree(child)


# --- the container ------------------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _namespace_pid(pid: int) -> int | None:
    """``pid``'s number in its own (innermost) PID namespace."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except OSError:
        return None
    return None


class Container:
    """One booted container: ``start()`` boots the root with systemd as PID 1 and waits until
    ``systemctl is-system-running`` says ``running``; ``run()`` runs a command inside;
    ``stop()`` powers it off (SIGTERM to nspawn), then kills what is left.

    ``netns_path``: a network namespace to run in (``ip netns add``), else the host's network.
    ``binds_ro``: host path -> container path, bind-mounted read-only.
    """

    def __init__(
        self,
        rootfs: Path,
        *,
        log_path: Path,
        netns_path: str | None = None,
        binds_ro: Mapping[str, str] | None = None,
    ) -> None:
        self.rootfs = rootfs
        self.log_path = log_path
        self.netns_path = netns_path
        self.binds_ro = dict(binds_ro or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1: int | None = None
        self._cgroups: list[Path] = []

    def _nspawn(self, *extra: str) -> list[str]:
        argv = [
            "systemd-nspawn",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--volatile=overlay",
            "--link-journal=no",
            "--console=pipe",
            f"--directory={self.rootfs}",
        ]
        if self.netns_path:
            argv.append(f"--network-namespace-path={self.netns_path}")
        argv += [f"--bind-ro={host}:{inside}" for host, inside in self.binds_ro.items()]
        return argv + list(extra)

    def _in_own_cgroup(self, argv: list[str]) -> list[str]:
        """``argv`` started from a fresh cgroup of its own in each hierarchy nspawn uses."""
        name = f"gs-nspawn-{os.getpid()}-{secrets.token_hex(3)}"
        moves = []
        for parent in _own_cgroups():
            _sweep_stale_cgroups(parent)
            try:
                (parent / name).mkdir()
            except OSError:
                continue
            self._cgroups.append(parent / name)
            moves.append(f"echo $$ > {parent / name / 'cgroup.procs'}")
        if not moves:
            return argv
        return ["sh", "-c", " && ".join([*moves, 'exec "$@"']), "sh", *argv]

    def check_nspawn_runs(self) -> None:
        """Raise ``Unavailable`` unless nspawn can run a command in this root at all."""
        result = _run(self._in_own_cgroup(self._nspawn("/bin/true")), timeout=120)
        self._release_cgroups()
        if result.returncode != 0:
            raise Unavailable(f"systemd-nspawn cannot run here: {result.stderr.strip()[-1500:]}")

    def start(self, timeout_s: float = 90) -> Container:
        self.check_nspawn_runs()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._in_own_cgroup(self._nspawn("--boot")),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.proc

        def init_pid() -> int | None:
            if proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited ({proc.returncode}): {self.log()}")
            for pid in _descendants(proc.pid):
                if _namespace_pid(pid) == 1:
                    return pid
            return None

        self.pid1 = poll_until(init_pid, timeout_s=30, what="the container's PID 1")

        def booted() -> str | None:
            # "offline" until systemd listens on its socket, "starting" until boot is done.
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            return None if state in ("", "offline", "initializing", "starting") else state

        state = poll_until(booted, timeout_s=timeout_s, what="the container's boot")
        if state != "running":
            failed = self.run(["systemctl", "--failed", "--no-legend"], check=False).stdout
            raise RuntimeError(f"the container is {state!r}; failed units: {failed}")
        return self

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` in every namespace of the container (as its root), with a clean environment."""
        assert self.pid1 is not None, "start() first"
        variables = {
            "PATH": CONTAINER_PATH,
            "LANG": "C.UTF-8",
            "HOME": "/root",
            "TERM": "dumb",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        result = _run(
            [
                "nsenter",
                "--target",
                str(self.pid1),
                "--all",
                "env",
                "-i",
                *(f"{k}={v}" for k, v in variables.items()),
                *argv,
            ],
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def path(self, inside: str) -> str:
        """A host path to the container's file ``inside`` (through its PID 1's root)."""
        assert self.pid1 is not None
        return f"/proc/{self.pid1}/root/{inside.lstrip('/')}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def stop(self, timeout_s: float = 30) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn asks the container's systemd to power off
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self.pid1 is not None and _namespace_pid(self.pid1) == 1:
            # nspawn is gone but its PID 1 is not: killing it ends the whole PID namespace.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid1, signal.SIGKILL)
        self._release_cgroups()
        self.pid1 = None

    def _release_cgroups(self) -> None:
        for path in self._cgroups:
            _remove_cgroup_tree(path)
        self._cgroups.clear()
