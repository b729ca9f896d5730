"""``python -m bench``: measure the service against a bare reference server, in one run.

1. baseline: a bare httptools + uvloop server answering ``GET /`` (``bench/baseline.py``);
2. ``serve()`` on one process, straight over TCP: ``{ hello }`` and ``notes(first: 100)``;
3. the same two queries through nginx to two supervisor workers (``support.stack.Stack``);
4. ``service.asgi_app`` under uvicorn, only when uvicorn happens to be installed;
5. subscription fanout through nginx: many subscribers, timed broadcasts over Redis;
6. WebSocket framing: websockets against wsproto (``bench/ws_framing.py``);
7. idle: worker RSS per idle subscribed WebSocket (``bench/idle.py``);
8. documents: hostile documents' preparation time on and off the loop;
9. compiled: compiled execution against graphql-core's ``execute``, in-process;
10. hotpath: logs and metrics on the request hot path, in-process (``bench/hotpath.py``);
11. peers: one tiny schema served by ``serve()``, ``asgi_app`` under uvicorn, strawberry and
    ariadne under uvicorn, measured back to back (``bench/peers/``; the ``bench`` extra);
12. bundle: the bundle as shipped and with logs+metrics off against strawberry behind the
    same nginx files (``bench/bundle.py``);
13. fanout-node: fanout with a Node ``ws`` client at 1,000 and 10,000 subscribers
    (``bench/fanout_node.py``).

``BENCH_BASELINE_SRC=<checkout of an earlier commit>`` adds that code to ``bundle`` and
``fanout-node``, measured in the same run (``baseline_env``).

Every target measured with wrk also gets the server's CPU time per request: ``measure`` reads
utime + stime of the server's process tree from ``/proc`` right before and right after the
measured wrk run (not the warm-up) and divides by the requests wrk counted (``bench/procs.py``,
``bench/report.py``). Behind nginx, the server is the supervisor and its workers; nginx's own
CPU is a separate figure.

Every server runs as a child process reaped on the way out; databases are throwaway ones,
dropped afterwards. Settings: ``BENCH_*`` variables (``bench/config.py``). The report goes to
stdout and, as JSON, to ``REPORT_PATH`` (under the system temp directory). A failing part is
reported and the rest still runs; the exit status is 1 if any part failed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence

import uvloop

from bench import asgi_one, peers, ws_framing
from bench.bundle import SCHEMA_APP, Target, strawberry_available, strawberry_behind_nginx
from bench.compiled import lines as compiled_lines
from bench.compiled import measure as measure_compiled
from bench.config import BenchSettings
from bench.db import SEED_NOTES, seed_notes, seeded_database
from bench.fanout import raise_nofile, run_fanout
from bench.fanout_node import env_for_stack, node_ready, run_case
from bench.hotpath import hotpath_lines, run_hotpath
from bench.idle import hold_idle, worst_documents
from bench.peers.schema import QUERY as PEER_QUERY
from bench.peers.schema import answers, check_server
from bench.procs import Child, CpuUse, graphql, tree_ticks
from bench.report import SERVER, Measured, Report
from bench.wrk import WrkResult, run_wrk
from support.stack import Stack, children_of, free_port

HELLO = "{ hello }"
NOTES = "{ notes(first: 100) { id title description priority createdBy createdAt } }"
QUERIES = {"hello": HELLO, "notes": NOTES}
LABELS = {"hello": "{ hello }", "notes": "notes(100)"}
FANOUT_GROUP = "bench"


class BenchError(RuntimeError):
    """A target answered wrongly, so its figures would mean nothing."""


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def part(report: Report, key: str) -> Iterator[None]:
    """Run one part of the benchmark; record its failure and carry on with the next."""
    started = time.monotonic()
    progress(f"{key} ...")
    try:
        yield
    except Exception as exc:
        traceback.print_exc()
        first_line = next(iter(str(exc).splitlines()), "")
        report.errors[key] = f"{type(exc).__name__}: {first_line}"
    finally:
        progress(f"{key} done in {time.monotonic() - started:.1f} s")


def check_answers(port: int, path: str = "/graphql") -> None:
    """Both queries answer what the benchmark assumes: the greeting and every seeded note."""
    hello = graphql(port, HELLO, path)
    if hello != {"hello": "Hello, world!"}:
        raise BenchError(f"{HELLO} answered {hello}")
    notes = graphql(port, NOTES, path)["notes"]
    if len(notes) != SEED_NOTES:
        raise BenchError(f"notes(first: 100) returned {len(notes)} notes, not {SEED_NOTES}")


def measure(
    settings: BenchSettings,
    url: str,
    query: str | None,
    *,
    server: Sequence[int],
    others: Mapping[str, Sequence[int]] | None = None,
) -> Measured:
    """Warm ``url`` up (document cache, pools), then measure it; ``query`` None means GET.

    ``server`` are the root pids of the server's processes: each with every process under it
    (a supervisor's workers) is the server whose CPU per request the row reports. ``others``
    are further groups measured over the same run (``{"nginx": [nginx's pid]}``). Their
    ticks are read right before and right after the measured wrk run only.
    """
    method, body, headers = "GET", None, {}
    if query is not None:
        method, body = "POST", json.dumps({"query": query})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}

    def run(duration_s: float) -> WrkResult:
        return run_wrk(
            url,
            duration_s=duration_s,
            threads=settings.threads,
            connections=settings.connections,
            method=method,
            body=body,
            headers=headers,
        )

    if settings.warmup_s > 0:
        run(settings.warmup_s)
    groups = {SERVER: server, **(others or {})}
    before = tree_ticks(groups)
    result = run(settings.duration_s)
    after = tree_ticks(groups)
    if result.non_2xx:
        raise BenchError(f"{url}: {result.non_2xx} of {result.requests} responses were not 2xx")
    if result.socket_errors:
        progress(f"warning: {url}: {result.socket_errors} socket errors")
    return Measured(
        result,
        {name: CpuUse.between(before[name], after[name], result.requests) for name in groups},
    )


def url(port: int, path: str = "/graphql") -> str:
    return f"http://127.0.0.1:{port}{path}"


def bench_baseline(report: Report) -> None:
    port = free_port()
    with Child("bench.baseline", str(port)) as child:
        child.wait_http(port, "/")
        report.add(
            "baseline",
            "baseline httptools hello",
            measure(report.settings, url(port, "/"), None, server=[child.pid]),
        )


def bench_single(report: Report) -> None:
    with seeded_database() as database_url:
        port = free_port()
        with Child("bench.serve_one", str(port), env={"DATABASE_URL": database_url}) as child:
            child.wait_http(port, "/healthz")
            check_answers(port)
            for key, query in QUERIES.items():
                report.add(
                    f"serve_{key}",
                    f"serve() 1 worker {LABELS[key]}",
                    measure(report.settings, url(port), query, server=[child.pid]),
                )
    report.compare("serve_hello", "baseline", "baseline")


def bench_asgi(report: Report) -> None:
    if not asgi_one.available():
        report.skip("asgi_hello", "asgi_app + uvicorn { hello }", "skipped (uvicorn not installed)")
        report.notes["asgi"] = "skipped (uvicorn not installed)"
        return
    with seeded_database() as database_url:
        port = free_port()
        with Child("bench.asgi_one", str(port), env={"DATABASE_URL": database_url}) as child:
            child.wait_ready(lambda: bool(graphql(port, HELLO)), f"uvicorn on :{port}")
            check_answers(port)
            report.add(
                "asgi_hello",
                "asgi_app + uvicorn { hello }",
                measure(report.settings, url(port), HELLO, server=[child.pid]),
            )
    report.compare("asgi_hello", "serve_hello", "serve()")
    report.notes["asgi"] = "uvicorn (uvloop, httptools, no access log) running service.asgi_app"


def bench_nginx(report: Report) -> None:
    with Stack(workers=2) as stack:
        seed_notes(stack.database_url)
        check_answers(stack.port)
        assert stack.proc is not None and stack.nginx is not None and stack.nginx.pid is not None
        supervisor, nginx = stack.proc.pid, stack.nginx.pid
        for key, query in QUERIES.items():
            report.add(
                f"nginx_{key}",
                f"nginx 2 workers {LABELS[key]}",
                measure(
                    report.settings,
                    url(stack.port),
                    query,
                    server=[supervisor],
                    others={"nginx": [nginx]},
                ),
            )
    report.compare("nginx_hello", "serve_hello", "1 worker")
    report.compare("nginx_notes", "serve_notes", "1 worker")
    report.notes["nginx"] = (
        "workers run the production path: JWT context, one JSON log line per request; "
        "cpu us is the supervisor and its workers, nginx's own (master and workers) is apart"
    )


def active_subscriptions(metrics_dir: str) -> int:
    """The workers' ``graphql_active_subscriptions`` gauge, summed over live workers."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    return int(registry.get_sample_value("graphql_active_subscriptions") or 0)


def bench_fanout(report: Report) -> None:
    settings = report.settings
    limit = raise_nofile(8192)
    if limit < settings.subscribers + 256:
        raise BenchError(f"RLIMIT_NOFILE is {limit}: too low for {settings.subscribers} sockets")
    with Stack(workers=2, app="support.schemas:schema") as stack:
        report.fanout = uvloop.run(
            run_fanout(
                f"ws://127.0.0.1:{stack.port}/graphql",
                redis_url=stack.env["REDIS_URL"],
                subscribers=settings.subscribers,
                events=settings.events,
                group=FANOUT_GROUP,
                active_subscriptions=lambda: active_subscriptions(stack.metrics_dir),
                window=settings.window,
            )
        )
    in_flight = (
        "one broadcast at a time (each sent once the previous reached every subscriber)"
        if settings.window == 1
        else f"at most {settings.window} broadcasts in flight"
    )
    report.notes["fanout"] = (
        f"graphql-transport-ws through nginx to 2 workers over Redis; {in_flight}; "
        "subscribers and publisher share one uvloop process on the same cores"
    )


_RATIO = re.compile(r"ratio wsproto/websockets:\s+parse ([0-9.]+)x, send ([0-9.]+)x")


def bench_ws_framing(report: Report) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ws_framing.main()
    text = out.getvalue()
    report.ws_framing = {"output": text}
    match = _RATIO.search(text)
    if match is not None:
        report.ws_framing["wsproto_over_websockets"] = {
            "parse": float(match.group(1)),
            "send": float(match.group(2)),
        }


def median_run(runs: list[Measured]) -> WrkResult:
    """The run with the median req/s (the upper one of an even count), with its latencies."""
    return sorted((run.wrk for run in runs), key=lambda run: run.requests_per_s)[len(runs) // 2]


def cpu_per_round(runs: list[Measured]) -> str:
    """Each round's server CPU us per request, or ``n/a``."""
    figures = (run.cpu[SERVER].us_per_request for run in runs)
    return " ".join("n/a" if us is None else f"{us:.0f}" for us in figures)


def bench_peers(report: Report) -> None:
    """Every peer up at once, then ``peer_rounds`` rounds of one ``measure`` each, interleaved.

    Interleaving spreads drift on a noisy machine over all targets instead of whichever ran
    during it. Each row is the median round; its ratio is over ``serve()``'s median, and the
    notes give each round's ratio (the two runs of a round are at most one round apart). Each
    row's CPU per request is the median over its rounds of its one server process (with
    anything it forks).
    """
    settings = report.settings
    missing = {peer.key: peer.missing() for peer in peers.PEERS}
    runnable = [peer for peer in peers.PEERS if missing[peer.key] is None]
    runs: dict[str, list[Measured]] = {peer.key: [] for peer in runnable}
    with contextlib.ExitStack() as children:
        ports: dict[str, int] = {}
        pids: dict[str, int] = {}
        for peer in runnable:
            port = free_port()
            child = children.enter_context(Child(peer.module, *peer.command_args(port)))
            child.wait_ready(functools.partial(answers, port), f"{peer.label} on :{port}")
            check_server(port)
            ports[peer.key], pids[peer.key] = port, child.pid
        for round_no in range(settings.peer_rounds):
            shift = round_no % len(runnable)
            for peer in runnable[shift:] + runnable[:shift]:
                progress(f"peers round {round_no + 1}/{settings.peer_rounds}: {peer.label}")
                runs[peer.key].append(
                    measure(settings, url(ports[peer.key]), PEER_QUERY, server=[pids[peer.key]])
                )

    serve_key = peers.SERVE.key
    per_round = []
    for peer in peers.PEERS:
        reason = missing[peer.key]
        if reason is not None:
            report.skip(peer.key, peer.label, f"skipped ({reason} not installed)")
            continue
        report.add_rounds(peer.key, peer.label, median_run(runs[peer.key]), runs[peer.key])
        rates = " ".join(f"{run.wrk.requests_per_s:.0f}" for run in runs[peer.key])
        ratios = ""
        if peer.key != serve_key:
            report.compare(peer.key, serve_key, "serve()")
            ratios = ", ratio " + " ".join(
                f"{run.wrk.requests_per_s / ref.wrk.requests_per_s:.2f}"
                for run, ref in zip(runs[peer.key], runs[serve_key], strict=True)
            )
        per_round.append(
            f"{peer.label.removeprefix('peers: ')}: req/s {rates}{ratios}, "
            f"cpu us {cpu_per_round(runs[peer.key])}"
        )
    report.notes["peers"] = (
        "type Query { hello(name: String): String! } in each; one process each: serve() on "
        "uvloop, the others under uvicorn " + " ".join(peers.UVICORN_FLAGS) + "; "
        f"median of {settings.peer_rounds} interleaved rounds; strawberry and ariadne parse and "
        "validate every request by default, serve() caches validated documents; 'cached' is "
        "strawberry with its opt-in ParserCache and ValidationCache; " + peers.versions()
    )
    report.notes["peers rounds"] = "; ".join(per_round)


def read_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bench_idle(report: Report) -> None:
    """RSS per idle subscribed WebSocket in the workers, through nginx."""
    n = report.settings.idle_connections
    limit = raise_nofile(2 * n + 1024)
    if limit < n + 512:
        raise BenchError(f"RLIMIT_NOFILE is {limit}: too low for {n} sockets")
    with Stack(workers=2, app="support.schemas:schema") as stack:
        workers = sorted(stack.worker_pids())
        before = sum(read_rss_kib(pid) for pid in workers)
        opened, after = uvloop.run(
            hold_idle(
                f"ws://127.0.0.1:{stack.port}/graphql",
                n,
                lambda: sum(read_rss_kib(pid) for pid in workers),
            )
        )
    per_connection = (after - before) / opened * 1024 if opened else 0.0
    report.notes["idle"] = (
        f"{opened} idle subscribed graphql-transport-ws connections through nginx to 2 workers: "
        f"worker RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB, "
        f"{per_connection / 1024:.1f} KiB per connection"
    )


def bench_documents(report: Report) -> None:
    """Preparation time of the most expensive documents within the limits."""
    rows = worst_documents()
    name, size, ms, verdict = rows[0]
    report.notes["documents"] = f"slowest: {name}, {size} bytes, {ms:.1f} ms ({verdict})"
    for name, size, ms, verdict in rows:
        report.notes[f"document {name}"] = f"{size} bytes, {ms:.1f} ms, {verdict}"


def bench_compiled(report: Report) -> None:
    """Compiled execution against graphql-core's ``execute``, in-process (``bench/compiled.py``)."""
    report.notes.update(compiled_lines(measure_compiled(min(report.settings.duration_s, 5.0) / 2)))


def bench_hotpath(report: Report) -> None:
    """Logs and metrics on the request hot path, in-process (``bench/hotpath.py``): CPU per
    ``{ hello }`` request with both, each alone and neither, interleaved rounds."""
    settings = report.settings
    requests = max(500, int(4000 * settings.duration_s))
    report.notes.update(hotpath_lines(run_hotpath(requests, settings.peer_rounds + 2)))


def baseline_env() -> dict[str, str] | None:
    """``BENCH_BASELINE_SRC=<dir>``: another checkout of this project (an earlier commit, e.g.
    ``git worktree add /tmp/old <commit>``), run from the same venv with its package first on
    the path of the servers it starts; ``bundle`` and ``fanout-node`` then measure it too, in
    the same run: before and after, side by side. ``None`` when unset.

    ``PYTHONSAFEPATH`` keeps ``python -m`` from putting the current directory (this checkout)
    ahead of it. Raises ``BenchError`` when the directory holds no ``service`` package or a
    server started so would still import this checkout's."""
    baseline = os.environ.get("BENCH_BASELINE_SRC")
    if not baseline:
        return None
    package = os.path.join(os.path.realpath(baseline), "service")
    if not os.path.isdir(package):
        raise BenchError(f"BENCH_BASELINE_SRC={baseline}: no service/ package there")
    env = {"PYTHONPATH": baseline, "PYTHONSAFEPATH": "1"}
    found = subprocess.run(
        [sys.executable, "-c", "import service; print(service.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if os.path.dirname(os.path.realpath(found)) != package:
        raise BenchError(f"BENCH_BASELINE_SRC={baseline}: servers would import {found!r}")
    return env


def bench_bundle(report: Report) -> None:
    """The bundle as shipped against strawberry behind the same nginx (``bench/bundle.py``),
    with server CPU per request. With ``BENCH_BASELINE_SRC`` (``baseline_env``), that code's
    bundle, shipped and quiet, joins the same interleaved rounds."""
    settings = report.settings
    query = PEER_QUERY
    quiet = {"LOG_LEVEL": "warning", "METRICS_ENABLED": "false"}
    variants = [
        ("bundle_shipped", "bundle as shipped, 1 worker", {}),
        ("bundle_quiet", "bundle, logs+metrics off, 1 worker", quiet),
    ]
    baseline = baseline_env()
    if baseline is not None:
        variants += [
            ("bundle_base_shipped", "baseline as shipped", baseline),
            ("bundle_base_quiet", "baseline, logs+metrics off", {**baseline, **quiet}),
        ]
    with contextlib.ExitStack() as stack:
        targets: list[Target] = []
        for key, label, env in variants:
            st = stack.enter_context(Stack(workers=1, app=SCHEMA_APP, env=env))
            assert st.proc is not None
            pids = [st.proc.pid, *st.worker_pids()]
            targets.append(Target(key, label, url(st.port), pids))
        if strawberry_available():
            address, pids = stack.enter_context(strawberry_behind_nginx(free_port()))
            targets.append(
                Target("bundle_strawberry", "strawberry, uvicorn, 1 process", address, pids)
            )
        else:
            report.skip("bundle_strawberry", "strawberry, uvicorn", "not installed (bench extra)")
        for target in targets:  # warm up
            measure(
                dataclasses.replace(settings, duration_s=1.0), target.url, query, server=target.pids
            )
        runs: dict[str, list[Measured]] = {target.key: [] for target in targets}
        each = dataclasses.replace(settings, duration_s=settings.bundle_seconds)
        for index in range(settings.bundle_rounds):
            order = list(targets)
            random.Random(index).shuffle(order)  # no target always right after another
            for target in order:
                runs[target.key].append(measure(each, target.url, query, server=target.pids))
    for target in targets:
        best = max((run.wrk for run in runs[target.key]), key=lambda r: r.requests_per_s)
        report.add_rounds(target.key, target.label + " { hello }", best, runs[target.key])
    if strawberry_available():
        for target in targets:
            if target.key != "bundle_strawberry":
                report.compare(target.key, "bundle_strawberry", "strawberry")
    report.notes["bundle"] = (
        f"{settings.bundle_rounds} interleaved rounds of {settings.bundle_seconds:g} s through "
        "the same nginx files, best req/s and median server CPU per request (the server's "
        "process tree, not nginx, from /proc)"
    )
    for on_key, off_key, name in (
        ("bundle_shipped", "bundle_quiet", "bundle logs+metrics cost"),
        ("bundle_base_shipped", "bundle_base_quiet", "bundle logs+metrics cost, baseline"),
    ):
        if on_key in runs and off_key in runs:
            report.notes[name] = logs_metrics_cost(runs[on_key], runs[off_key])


def logs_metrics_cost(on: Sequence[Measured], off: Sequence[Measured]) -> str:
    """What logs and metrics on cost against both off, from the interleaved rounds of one
    run, paired round by round (the machine drifts between rounds more than within one): the
    median share of throughput and the median server CPU per request they add."""
    shares = [
        1.0 - a.wrk.requests_per_s / b.wrk.requests_per_s
        for a, b in zip(on, off, strict=True)
        if b.wrk.requests_per_s > 0
    ]
    line = f"{statistics.median(shares):.1%} of throughput against logs+metrics off"
    added = []
    for a, b in zip(on, off, strict=True):
        on_us, off_us = a.cpu[SERVER].us_per_request, b.cpu[SERVER].us_per_request
        if on_us is not None and off_us is not None:
            added.append(on_us - off_us)
    if added:
        line += f", {statistics.median(added):+.1f} us server CPU per request"
    return line + f" (medians over {len(shares)} paired rounds)"


def bench_fanout_node(report: Report) -> None:
    """Fanout with a Node client (``bench/fanout_node.py``), through nginx to 2 workers over
    Redis: BENCH_SUBSCRIBERS and ten times as many subscribers, one group and 100, shared and
    per-subscriber execution, each with a window of 4 rounds in flight (the rate the machine
    sustains); then shared execution paced at 10,000 notifications/s (latency at that load).
    CPU per delivered notification by component, and what the workers alone would sustain.
    With ``BENCH_BASELINE_SRC`` (``baseline_env``), each case also runs on that code, right
    after this code's run of it."""
    why = node_ready()
    if why is not None:
        report.notes["fanout-node"] = f"skipped: {why}"
        return
    settings = report.settings
    few, many = settings.subscribers, 10 * settings.subscribers
    limit = raise_nofile(2 * many + 1024)
    if limit < many + 256:
        raise BenchError(f"RLIMIT_NOFILE is {limit}: too low for {many} sockets")
    notifications = settings.events * few  # per closed-loop case
    cases: list[tuple[int, int, bool, float | None]] = [
        (subs, groups, shared, None)
        for subs in (few, many)
        for groups in (1, 100)
        for shared in (True, False)
    ]
    cases += [(few, 1, True, 10_000.0), (many, 1, True, 10_000.0)]
    stacks = [("", env_for_stack())]
    baseline = baseline_env()
    if baseline is not None:  # each case on the baseline right after this code
        stacks.append(("baseline: ", {**env_for_stack(), **baseline}))
    with contextlib.ExitStack() as exits:
        running = [
            (prefix, exits.enter_context(Stack(workers=2, app="support.schemas:schema", env=env)))
            for prefix, env in stacks
        ]
        for (subs, groups, shared, rate), (prefix, stack) in itertools.product(cases, running):
            workers = sorted(stack.worker_pids())
            assert stack.nginx is not None and stack.nginx.pid is not None
            nginx = [stack.nginx.pid, *children_of(stack.nginx.pid)]
            groups = min(groups, subs)
            # Paced: about 5 s at the rate; else the same number of notifications per case.
            rounds = max(3, round(rate * 5 / subs)) if rate else max(3, notifications // subs)
            result = uvloop.run(
                run_case(
                    f"ws://127.0.0.1:{stack.port}/graphql",
                    stack.env["REDIS_URL"],
                    workers,
                    nginx,
                    subscribers=subs,
                    groups=groups,
                    shared=shared,
                    rounds=rounds,
                    rate=rate,
                )
            )
            label = prefix + result.label
            if result.delivered < result.expected:
                raise BenchError(f"{label}: {result.delivered} of {result.expected} arrived")
            per_core = 1e6 / result.worker_us if result.worker_us else float("inf")
            report.notes[f"fanout-node {label}"] = (
                f"{result.notifications_per_s:,.0f} notifications/s, latency p50 "
                f"{result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms max {result.max_ms:.1f} ms; "
                f"CPU us per notification: workers {result.worker_us:.1f} (alone: "
                f"{per_core:,.0f}/s per core), nginx {result.nginx_us:.1f}, redis "
                f"{result.redis_us:.1f}, client {result.client_us:.1f}"
            )


PARTS: dict[str, Callable[[Report], None]] = {
    "baseline": bench_baseline,
    "serve": bench_single,
    "asgi": bench_asgi,
    "nginx": bench_nginx,
    "fanout": bench_fanout,
    "ws": bench_ws_framing,
    "idle": bench_idle,
    "documents": bench_documents,
    "compiled": bench_compiled,
    "hotpath": bench_hotpath,
    "peers": bench_peers,
    "bundle": bench_bundle,
    "fanout-node": bench_fanout_node,
}


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    """``python -m bench [PART ...]``: every part by default, else only those named."""
    chosen = argv[1:] or list(PARTS)
    unknown = [name for name in chosen if name not in PARTS]
    if unknown:
        print(f"bench: unknown part {unknown}; choose from {' '.join(PARTS)}", file=sys.stderr)
        return 2
    try:
        settings = BenchSettings.from_env()
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    report = Report(settings)
    # ``kill <pid>`` stops the run as Ctrl-C does: the servers it started are reaped on the
    # way out (by default SIGTERM ends Python at once and leaves them running).
    signal.signal(signal.SIGTERM, _interrupted)
    for name in PARTS:
        if name in chosen:
            with part(report, name):
                PARTS[name](report)
    print(report.text())
    print(f"\nJSON report: {report.write()}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
