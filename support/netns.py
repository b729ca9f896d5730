"""Several "hosts" on one machine: Linux network namespaces on a bridge, and forwarders that let
them reach this machine's Postgres and Redis.

``Network`` makes a bridge in the root namespace with the address ``.1`` of a private /24 (a
random ``10.x.y.0/24`` that no route of this machine overlaps). ``Network.add_host(name)`` makes
a network namespace (``ip netns add``) joined to the bridge by a veth pair, with its own address
(``.11``, ``.12``, ...), its own loopback and a default route through the bridge. The root
namespace reaches every host at its address; processes run inside a host with
``NetHost.command([...])`` (``ip netns exec``), so each host has its own ports: every host's
nginx can listen on 8080 and its supervisor serve metrics on 9400.

Postgres and Redis listen on 127.0.0.1 only, and their configuration is not ours to change.
``Network.forward(port)`` starts a TCP forwarder (socat) listening on the bridge address that
connects each client to ``127.0.0.1:port``; the hosts use ``postgresql://...@{gateway}:5432``
and ``redis://{gateway}:6379``. To Postgres every connection comes from 127.0.0.1, as from any
local client.

Everything is named after the creating process (``gs<pid>...``) so that ``sweep_stale()`` can
remove what a killed test run left behind. Needs root, ``ip`` (iproute2) and ``socat``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
from types import TracebackType

from support.polling import poll_until

NETNS_DIR = "/run/netns"
_PREFIX = "gs"


def missing_tools() -> list[str]:
    """What this module needs and this machine lacks (empty when it can run)."""
    missing = [tool for tool in ("ip", "socat") if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (network namespaces)")
    return missing


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    """The creating pid encoded in ``gs<pid>x...`` names, else ``None``."""
    if not name.startswith(_PREFIX):
        return None
    digits = name[len(_PREFIX) :].split("x", 1)[0]
    return int(digits) if digits.isdigit() else None


def sweep_stale() -> None:
    """Delete namespaces and bridges made by test runs whose process no longer exists."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(NETNS_DIR):
            pid = _owner(name)
            if pid is not None and not _pid_alive(pid):
                _ip("netns", "del", name, check=False)
    links = _ip("-j", "link", "show", "type", "bridge", check=False)
    with contextlib.suppress(ValueError):
        for link in json.loads(links.stdout or "[]"):
            name = link.get("ifname", "")
            pid = _owner(name)
            if pid is not None and not _pid_alive(pid):
                _ip("link", "del", name, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A random 10.x.y.0/24 that no route or address of this machine overlaps."""
    taken = []
    for family_args in (("-j", "route", "show", "table", "all"), ("-j", "addr", "show")):
        result = _ip("-4", *family_args, check=False)
        with contextlib.suppress(ValueError):
            for entry in json.loads(result.stdout or "[]"):
                for candidate in [entry.get("dst")] + [
                    f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])
                ]:
                    if candidate and candidate[0].isdigit():
                        with contextlib.suppress(ValueError):
                            taken.append(ipaddress.ip_network(candidate, strict=False))
    for _ in range(200):
        subnet = ipaddress.IPv4Network(
            f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24"
        )
        if not any(subnet.overlaps(other) for other in taken if other.prefixlen > 0):
            return subnet
    raise RuntimeError("no free 10.x.y.0/24 for the test network")


class NetHost:
    """One network namespace on the bridge, with its own address."""

    def __init__(self, network: Network, name: str, address: str, netns: str) -> None:
        self.network = network
        self.name = name
        self.address = address
        self.netns = netns

    @property
    def netns_path(self) -> str:
        """``/run/netns/<name>``, for ``systemd-nspawn --network-namespace-path``."""
        return os.path.join(NETNS_DIR, self.netns)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.netns, *argv]


class Network:
    """A bridge, the hosts on it, and the forwarders to this machine's local services."""

    def __init__(self) -> None:
        # Interface names have at most 15 characters: gs + pid (<= 7) + x + 2 hex + v + index.
        while True:
            self.tag = f"{_PREFIX}{os.getpid()}x{secrets.token_hex(1)}"
            if not os.path.exists(f"/sys/class/net/{self.tag}"):
                break
        self.subnet = _free_subnet()
        hosts = list(self.subnet.hosts())
        self.gateway = str(hosts[0])
        self._next_address = iter(str(a) for a in hosts[10:200])
        self.bridge = self.tag
        self.hosts: dict[str, NetHost] = {}
        self._forwarders: list[subprocess.Popen[bytes]] = []
        self._up = False

    def __enter__(self) -> Network:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Network:
        sweep_stale()
        self._up = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.stop()
            raise
        return self

    def add_host(self, name: str) -> NetHost:
        """A new namespace joined to the bridge: ``eth0`` with the next address, ``lo`` up."""
        index = len(self.hosts)
        netns = f"{self.tag}{name}"
        outer = f"{self.tag}v{index}"
        address = next(self._next_address)
        _ip("netns", "add", netns)
        host = NetHost(self, name, address, netns)
        self.hosts[name] = host
        _ip("link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", netns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "route", "add", "default", "via", self.gateway)
        return host

    def forward(self, port: int, target_host: str = "127.0.0.1") -> str:
        """Forward ``{gateway}:{port}`` to ``{target_host}:{port}``; returns ``gateway:port``."""
        proc = subprocess.Popen(
            [
                "socat",
                f"TCP-LISTEN:{port},bind={self.gateway},fork,reuseaddr",
                f"TCP:{target_host}:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._forwarders.append(proc)

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"socat forwarding port {port} exited ({proc.returncode})")
            with socket.create_connection((self.gateway, port), timeout=1):
                return True

        poll_until(listening, timeout_s=10, what=f"the forwarder on {self.gateway}:{port}")
        return f"{self.gateway}:{port}"

    def stop(self) -> None:
        """Stop the forwarders, delete every namespace (its veth goes with it) and the bridge."""
        for proc in self._forwarders:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self._forwarders.clear()
        for host in self.hosts.values():
            _ip("netns", "del", host.netns, check=False)
        self.hosts.clear()
        if self._up:
            _ip("link", "del", self.bridge, check=False)
            self._up = False
