"""The benchmark report: rows measured in one run, a text table, and a JSON file.

Ratios compare figures from the same run on the same machine; absolute numbers depend on the
machine and on whatever else it was doing, so read them only next to each other.

Every row measured with wrk carries the server's CPU time per request: utime + stime of the
server's whole process tree (``bench.procs.tree_ticks``; not wrk, not nginx) over exactly the
measured run, divided by the requests wrk counted. A row with rounds takes the median over its
rounds. A row without a figure says why (``cpu_missing`` in the JSON, a footnote in the text);
other processes measured over the same run (nginx in front of the workers) get their own
figure next to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

from bench.config import BenchSettings
from bench.fanout import FanoutResult
from bench.procs import COARSE_TICKS, TICK_US, CpuUse
from bench.wrk import WrkResult

REPORT_PATH = os.path.join(tempfile.gettempdir(), "graphql-service-bench", "last-report.json")


SERVER = "server"
"""The key of the server's own processes in ``Measured.cpu`` and ``HTTPRow.cpu``."""

FANOUT_NO_CPU = (
    "not measured: fanout counts notifications, not requests "
    "(fanout-node gives CPU per notification)"
)


@dataclasses.dataclass(frozen=True, slots=True)
class Measured:
    """One measured wrk run and what each group of processes used over exactly that run."""

    wrk: WrkResult
    cpu: Mapping[str, CpuUse]  # SERVER, then others (``"nginx"``)


@dataclasses.dataclass(frozen=True, slots=True)
class CpuFigure:
    """CPU per request of one group of processes for a row: the median over its runs."""

    runs: tuple[CpuUse, ...]

    @property
    def us(self) -> float | None:
        values = [us for run in self.runs if (us := run.us_per_request) is not None]
        return statistics.median(values) if values else None

    @property
    def missing(self) -> str:
        """Why ``us`` is None, or ``""``."""
        if self.us is not None:
            return ""
        return next((run.missing for run in self.runs if run.missing), "not measured")

    @property
    def coarse(self) -> bool:
        """Some run counted fewer than ``COARSE_TICKS`` ticks."""
        return any(run.coarse for run in self.runs)

    def as_json(self) -> dict[str, Any]:
        return {
            "us_per_request": self.us,
            "missing": self.missing or None,
            "coarse": self.coarse,
            "runs": [
                {
                    **dataclasses.asdict(run),
                    "us_per_request": run.us_per_request,
                    "step_us": run.step_us,
                }
                for run in self.runs
            ],
        }


@dataclasses.dataclass(slots=True)
class HTTPRow:
    key: str
    label: str
    result: WrkResult | None  # None: not measured, see ``skipped``
    ratio: float | None = None
    ratio_of: str = ""
    skipped: str = ""
    cpu: dict[str, CpuFigure] = dataclasses.field(default_factory=dict)  # SERVER, others

    @property
    def cpu_us(self) -> float | None:
        """The server's CPU microseconds per request, when there is a figure."""
        figure = self.cpu.get(SERVER)
        return figure.us if figure is not None else None

    @property
    def cpu_missing(self) -> str:
        """Why ``cpu_us`` is None (``""`` when it is not)."""
        if self.skipped:
            return self.skipped
        figure = self.cpu.get(SERVER)
        return "not measured" if figure is None else figure.missing


@dataclasses.dataclass(slots=True)
class Report:
    settings: BenchSettings
    started: float = dataclasses.field(default_factory=time.time)
    loadavg_start: tuple[float, float, float] = dataclasses.field(default_factory=os.getloadavg)
    http: list[HTTPRow] = dataclasses.field(default_factory=list)
    fanout: FanoutResult | None = None
    notes: dict[str, str] = dataclasses.field(default_factory=dict)
    ws_framing: dict[str, Any] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)

    def row(self, key: str) -> HTTPRow | None:
        return next((row for row in self.http if row.key == key), None)

    def add(self, key: str, label: str, run: Measured) -> HTTPRow:
        """A row measured by one wrk run."""
        return self.add_rounds(key, label, run.wrk, [run])

    def add_rounds(
        self, key: str, label: str, result: WrkResult, runs: Sequence[Measured]
    ) -> HTTPRow:
        """A row measured in rounds: wrk figures from ``result`` (the round the caller picked),
        CPU per request the median over every round."""
        groups = dict.fromkeys(name for run in runs for name in run.cpu)
        cpu = {
            name: CpuFigure(tuple(run.cpu[name] for run in runs if name in run.cpu))
            for name in groups
        }
        row = HTTPRow(key, label, result, cpu=cpu)
        self.http.append(row)
        return row

    def skip(self, key: str, label: str, reason: str) -> HTTPRow:
        """A row that was not measured, shown with ``reason`` in its place."""
        row = HTTPRow(key, label, None, skipped=reason)
        self.http.append(row)
        return row

    def compare(self, key: str, reference: str, name: str) -> None:
        """Set row ``key``'s ratio to its req/s over that of row ``reference``."""
        row, ref = self.row(key), self.row(reference)
        if row is None or ref is None or row.result is None or ref.result is None:
            return
        if ref.result.requests_per_s > 0:
            row.ratio = row.result.requests_per_s / ref.result.requests_per_s
            row.ratio_of = name

    # --- output -------------------------------------------------------------------------------
    def table(self) -> str:
        lines = [
            f"{'target':<44}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us':>8}"
            "   ratio; other processes' cpu us"
        ]
        footnotes = []
        for row in self.http:
            r = row.result
            if r is None:
                lines.append(f"{row.label:<44}  {row.skipped}")
                continue
            extra = [f"{row.ratio:.2f}x of {row.ratio_of}"] if row.ratio is not None else []
            for name, figure in row.cpu.items():
                if name != SERVER:
                    extra.append(f"{name} {_cpu_cell(figure).strip()}")
                    if figure.us is None:
                        footnotes.append(f"{row.label}, {name}: {figure.missing}")
            server = row.cpu.get(SERVER)
            cpu = _cpu_cell(server)
            if row.cpu_us is None:
                footnotes.append(f"{row.label}: {row.cpu_missing}")
            lines.append(
                f"{row.label:<44}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{cpu}"
                f"   {'; '.join(extra)}".rstrip()
            )
        if self.fanout is not None:
            f = self.fanout
            label = f"fanout {f.subscribers} subs x {f.events} events"
            lines.append(
                f"{label:<44}{f.notifications_per_s:>10.0f}{f.p50_ms:>9.1f}{f.p99_ms:>9.1f}"
                f"{'n/a':>8}   notif/s; publish-to-receive latency"
            )
            footnotes.append(f"{label}: {FANOUT_NO_CPU}")
        if footnotes:
            lines.append("cpu us n/a:")
            lines += [f"  {note}" for note in footnotes]
        return "\n".join(lines)

    def text(self) -> str:
        s = self.settings
        parts = [
            f"graphql-service benchmark: {os.cpu_count()} CPUs, 1-minute load average "
            f"{self.loadavg_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
            f"wrk -t{s.threads} -c{s.connections}, {s.duration_s:g} s per target after "
            f"{s.warmup_s:g} s warm-up. Compare ratios, not absolute figures.",
            f"cpu us: the server's CPU time per request (utime + stime of its whole process tree "
            f"from /proc, not wrk, not nginx) over exactly the measured run, divided by the "
            f"requests wrk counted; the median over a row's rounds. /proc counts in ticks of "
            f"{TICK_US / 1000:g} ms, so a short run is coarse: ~ marks a figure from a run of "
            f"fewer than {COARSE_TICKS} ticks.",
            "",
            self.table(),
        ]
        if self.fanout is not None:
            f = self.fanout
            parts.append(
                f"  fanout: {f.delivered} notifications in {f.wall_s:.2f} s (broadcasts took "
                f"{f.publish_s:.2f} s), latency max {f.max_ms:.1f} ms"
            )
        for key, note in self.notes.items():
            parts.append(f"  {key}: {note}")
        if self.ws_framing:
            parts += ["", "WebSocket framing (bench/ws_framing.py):"]
            parts += [f"  {line}" for line in self.ws_framing.get("output", "").splitlines()]
        if self.errors:
            parts += ["", "FAILED:"]
            parts += [f"  {key}: {error}" for key, error in self.errors.items()]
        return "\n".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_start": self.loadavg_start,
                "loadavg_end": os.getloadavg(),
                "cpu_tick_us": TICK_US,
            },
            "settings": dataclasses.asdict(self.settings),
            "http": [
                {
                    "key": row.key,
                    "label": row.label,
                    **(dataclasses.asdict(row.result) if row.result is not None else {}),
                    "ratio": row.ratio,
                    "ratio_of": row.ratio_of or None,
                    "skipped": row.skipped or None,
                    "cpu_us_per_request": row.cpu_us,
                    "cpu_missing": row.cpu_missing or None,
                    "cpu": {name: figure.as_json() for name, figure in row.cpu.items()},
                }
                for row in self.http
            ],
            "fanout": (
                {**dataclasses.asdict(self.fanout), "cpu_missing": FANOUT_NO_CPU}
                if self.fanout
                else None
            ),
            "notes": self.notes,
            "ws_framing": self.ws_framing,
            "errors": self.errors,
        }

    def write(self, path: str = REPORT_PATH) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.as_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path


def _cpu_cell(figure: CpuFigure | None) -> str:
    """The 8-wide cpu column: the figure (``~`` when coarse), else ``n/a``."""
    if figure is None or figure.us is None:
        return f"{'n/a':>8}"
    return f"{('~' if figure.coarse else '') + format(figure.us, '.0f'):>8}"
