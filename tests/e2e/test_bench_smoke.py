"""A smoke pass of the benchmark parts, so ``make bench`` cannot rot: each part runs for about a
second and must finish without an error. Correctness only; no timing is asserted: every part
that measures requests with wrk must report the server's CPU per request (present and above
zero, whatever its size) or say why a row was not measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import logs_metrics_cost
from bench.config import BenchSettings
from bench.procs import CpuUse, tree_ticks
from bench.report import SERVER, Measured, Report
from bench.wrk import WrkResult

REPO = Path(__file__).resolve().parents[2]
PARTS = [
    "baseline",
    "serve",
    "asgi",
    "nginx",
    "fanout",
    "ws",
    "idle",
    "documents",
    "compiled",
    "hotpath",
    "peers",
    "bundle",
]
# The parts that measure requests with wrk, and the key prefix of their report rows.
WRK_PARTS = {
    "baseline": "baseline",
    "serve": "serve_",
    "asgi": "asgi_",
    "nginx": "nginx_",
    "peers": "peers_",
    "bundle": "bundle_",
}


def check_cpu_figures(rows: list[dict[str, Any]]) -> None:
    """Every wrk part has rows; each is skipped with a reason or has a server CPU figure."""
    for part, prefix in WRK_PARTS.items():
        part_rows = [row for row in rows if row["key"].startswith(prefix)]
        assert part_rows, f"{part}: no row in the report"
        for row in part_rows:
            if row["skipped"]:
                assert row["cpu_us_per_request"] is None, row
                continue
            cpu = row["cpu_us_per_request"]
            assert cpu is not None and cpu > 0, f"{row['key']}: no CPU figure ({row})"
            assert row["cpu"]["server"]["runs"], row
        measured = [row for row in part_rows if not row["skipped"]]
        if part != "asgi":  # asgi alone needs uvicorn (the bench extra) for every row
            assert measured, f"{part}: every row skipped: {part_rows}"
    for row in rows:
        if row["key"].startswith("nginx_"):
            nginx = row["cpu"]["nginx"]  # a figure, or why not (a short run may be under a tick)
            assert nginx["us_per_request"] is not None or nginx["missing"], row


@pytest.mark.timeout(240)
def test_every_bench_part_runs(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "BENCH_SECONDS": "1",
        "BENCH_WARMUP_SECONDS": "0",
        "BENCH_CONNECTIONS": "4",
        "BENCH_SUBSCRIBERS": "20",
        "BENCH_EVENTS": "5",
        "BENCH_IDLE_CONNECTIONS": "50",
        "BENCH_PEER_ROUNDS": "1",
        "BENCH_BUNDLE_ROUNDS": "1",
        "BENCH_BUNDLE_SECONDS": "1",
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", *PARTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for part in PARTS:
        assert f"bench: {part} done" in done.stderr, done.stderr[-3000:]
    assert "cpu us" in done.stdout, done.stdout[-2000:]
    report_line = [line for line in done.stdout.splitlines() if line.startswith("JSON report:")]
    assert report_line, done.stdout[-2000:]
    report = json.loads(Path(report_line[0].split(":", 1)[1].strip()).read_text())
    assert not report.get("errors"), report.get("errors")
    check_cpu_figures(report["http"])
    for variant in ("shipped", "logs", "metrics", "quiet"):
        assert "us CPU per { hello } request" in report["notes"][f"hotpath {variant}"], report
    assert "of throughput against logs+metrics off" in report["notes"]["bundle logs+metrics cost"]
    for way in ("send_text", "serialize", "reused header"):
        assert f"server text frame, {way}:" in report["ws_framing"]["output"], report


def test_a_row_without_a_cpu_figure_says_why() -> None:
    """A run under one /proc tick has no figure, not 0, and the table and JSON say why."""
    report = Report(BenchSettings())
    wrk = WrkResult(1000.0, 1.0, 2.0, requests=1000, non_2xx=0, socket_errors=0)
    report.add("a", "under a tick", Measured(wrk, {SERVER: CpuUse(0, 1, 1000)}))
    report.add(
        "b", "measured", Measured(wrk, {SERVER: CpuUse(3, 1, 1000), "nginx": CpuUse(0, 2, 1000)})
    )
    rows = {row["key"]: row for row in report.as_json()["http"]}
    assert rows["a"]["cpu_us_per_request"] is None
    assert "under one /proc tick" in rows["a"]["cpu_missing"]
    assert rows["b"]["cpu_us_per_request"] is not None and rows["b"]["cpu_us_per_request"] > 0
    assert rows["b"]["cpu_missing"] is None
    assert rows["b"]["cpu"]["nginx"]["us_per_request"] is None
    table = report.table()
    assert "under a tick: under one /proc tick" in table
    assert "measured, nginx: under one /proc tick" in table


def test_process_tree_ticks_keep_a_reaped_child() -> None:
    """A child that exits and is reaped still counts, through its parent's cutime + cstime."""
    child = subprocess.Popen([sys.executable, "-c", "sum(range(3_000_000))"])
    me = [os.getpid()]
    before = tree_ticks({"me": me})["me"]
    child.wait()
    after = tree_ticks({"me": me})["me"]
    assert before.roots_alive and after.roots_alive
    assert before.processes >= 2  # this process and the child (alive, or a zombie until reaped)
    assert after.ticks >= before.ticks


def test_the_logs_and_metrics_cost_pairs_rounds() -> None:
    def run(requests_per_s: float, ticks: int) -> Measured:
        wrk = WrkResult(requests_per_s, 1.0, 2.0, requests=10000, non_2xx=0, socket_errors=0)
        return Measured(wrk, {SERVER: CpuUse(ticks, 1, 10000)})

    # Round by round: 10%, 20% and 5% of throughput; +10, +20 and +5 us (a tick is 10 ms).
    on = [run(900.0, 110), run(1600.0, 120), run(1900.0, 105)]
    off = [run(1000.0, 100), run(2000.0, 100), run(2000.0, 100)]
    assert logs_metrics_cost(on, off) == (
        "10.0% of throughput against logs+metrics off, +10.0 us server CPU per request "
        "(medians over 3 paired rounds)"
    )
