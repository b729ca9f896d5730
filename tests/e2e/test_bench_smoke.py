"""A smoke pass of the benchmark parts, so ``make bench`` cannot rot: each part runs for about a
second and must finish without an error. Correctness only; no figure is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARTS = ["baseline", "serve", "nginx", "fanout", "ws", "idle", "documents", "compiled", "bundle"]


@pytest.mark.timeout(180)
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
        "TMPDIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", *PARTS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for part in PARTS:
        assert f"bench: {part} done" in done.stderr, done.stderr[-3000:]
    report_line = [line for line in done.stdout.splitlines() if line.startswith("JSON report:")]
    assert report_line, done.stdout[-2000:]
    report = json.loads(Path(report_line[0].split(":", 1)[1].strip()).read_text())
    assert not report.get("errors"), report.get("errors")
