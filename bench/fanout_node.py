"""Fanout measured with a light client: ``bench/fanout_node/client.js`` (Node, ``ws``) holds the
subscribers, so the client is not what is measured.

For each case (subscribers x groups x shared or not), through nginx to 2 workers over Redis:
the client connects and subscribes (``CONFIRM_SUBSCRIPTIONS`` tells it each one joined), this
process publishes rounds (one event per group per round), either keeping a window of rounds in
flight (throughput) or on a fixed schedule (latency at a given rate), and the client reports
deliveries and publish-to-receive latency (the event carries its send time).
CPU per delivered notification is read from ``/proc`` for the workers, nginx and Redis, and
from the client itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from bench.procs import TICK_US, children_cpu_ticks

NODE_DIR = Path(__file__).with_name("fanout_node")


@dataclasses.dataclass
class NodeFanoutResult:
    label: str
    subscribers: int
    groups: int
    shared: bool
    delivered: int
    expected: int
    wall_s: float
    notifications_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    worker_us: float  # per delivered notification
    nginx_us: float
    redis_us: float
    client_us: float


def node_ready() -> str | None:
    """``None`` when node and the client's packages are there (installing them if needed),
    else why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not installed"
    if not (NODE_DIR / "node_modules" / "ws").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            return f"npm ci failed: {done.stderr.strip()[:200]}"
    return None


def pids_of(name: str) -> list[int]:
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in out.stdout.split()]


async def run_case(
    ws_url: str,
    redis_url: str,
    worker_pids: list[int],
    nginx_pids: list[int],
    *,
    subscribers: int,
    groups: int,
    shared: bool,
    rounds: int,
    window: int = 4,
    rate: float | None = None,
    timeout_s: float = 180.0,
) -> NodeFanoutResult:
    """One case: ``rounds`` rounds of one event per group. Closed loop by default (at most
    ``window`` rounds not yet received by every subscriber: the delivered rate is what the
    machine sustains); with ``rate`` (notifications/s), open loop: rounds start on a fixed
    schedule, whatever was received, and latency is measured at that load."""
    from service.broker import make_broker
    from service.subscriptions import Fanout
    from support.schemas import Shared, Unshared

    cls = Shared if shared else Unshared
    field = "shared" if shared else "unshared"
    client = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "client.js"),
        ws_url,
        str(subscribers),
        str(groups),
        field,
        str(rounds),
        str(timeout_s),
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 20,
    )
    assert client.stdout is not None
    stdout = client.stdout
    line = await asyncio.wait_for(stdout.readline(), timeout_s)
    if line.strip() != b"ready":
        raise RuntimeError(f"the fanout client did not get ready: {line!r}")
    publisher = Fanout(make_broker(redis_url))
    await publisher.start()
    redis_pids = pids_of("redis-server")
    done_rounds = asyncio.Queue[int]()
    final: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def read_client() -> None:
        while True:
            line = await stdout.readline()
            if not line:
                if not final.done():
                    final.set_exception(RuntimeError("the fanout client exited without a report"))
                return
            message = json.loads(line)
            if "round" in message:
                done_rounds.put_nowait(int(message["round"]))
            else:
                final.set_result(line)
                return

    reader = asyncio.get_running_loop().create_task(read_client())
    try:
        before = (
            children_cpu_ticks(worker_pids),
            children_cpu_ticks(nginx_pids),
            children_cpu_ticks(redis_pids),
        )
        started = time.perf_counter()
        interval_s = subscribers / rate if rate else 0.0
        in_flight = 0
        for value in range(rounds):
            if rate:
                # Open loop: round `value` starts at its scheduled time.
                delay = started + value * interval_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                while in_flight >= window:
                    await asyncio.wait_for(done_rounds.get(), timeout_s)
                    in_flight -= 1
            await asyncio.gather(
                *(
                    cls.broadcast(f"g{g}", {"item": {"value": value, "t": time.time()}})
                    for g in range(groups)
                )
            )
            in_flight += 1
        report_line = await asyncio.wait_for(final, timeout_s)
        wall_s = time.perf_counter() - started
        after = (
            children_cpu_ticks(worker_pids),
            children_cpu_ticks(nginx_pids),
            children_cpu_ticks(redis_pids),
        )
    finally:
        reader.cancel()
        await publisher.close()
        if client.returncode is None:
            client.kill()
        await client.wait()
    report = json.loads(report_line)
    if report.get("malformed"):
        raise RuntimeError(f"{report['malformed']} results lacked the published value or time")
    delivered = max(1, int(report["delivered"]))
    p50, p99, worst = report["latencies_ms"]
    per = [(a - b) * TICK_US / delivered for a, b in zip(after, before, strict=True)]
    load = f"paced at {rate:,.0f}/s" if rate else f"window {window} rounds"
    kind = "shared" if shared else "per-subscriber"
    label = f"{subscribers} subs, {groups} group(s), {kind}, {load}"
    return NodeFanoutResult(
        label=label,
        subscribers=subscribers,
        groups=groups,
        shared=shared,
        delivered=int(report["delivered"]),
        expected=subscribers * rounds,
        wall_s=wall_s,
        notifications_per_s=int(report["delivered"]) / wall_s,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=worst,
        worker_us=per[0],
        nginx_us=per[1],
        redis_us=per[2],
        client_us=report["cpu_us"] / delivered,
    )


def env_for_stack() -> dict[str, str]:
    """The stack's settings for this benchmark: subscriptions confirmed once joined."""
    return {"CONFIRM_SUBSCRIPTIONS": "true", "LOG_LEVEL": os.environ.get("LOG_LEVEL", "info")}
