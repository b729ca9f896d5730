"""The benchmark report: rows measured in one run, a text table, and a JSON file.

Ratios compare figures from the same run on the same machine; absolute numbers depend on the
machine and on whatever else it was doing, so read them only next to each other.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import tempfile
import time
from typing import Any

from bench.config import BenchSettings
from bench.fanout import FanoutResult
from bench.wrk import WrkResult

REPORT_PATH = os.path.join(tempfile.gettempdir(), "graphql-service-bench", "last-report.json")


@dataclasses.dataclass(slots=True)
class HTTPRow:
    key: str
    label: str
    result: WrkResult | None  # None: not measured, see ``skipped``
    ratio: float | None = None
    ratio_of: str = ""
    skipped: str = ""
    cpu_us: float | None = None  # server CPU per request, when measured


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

    def add(self, key: str, label: str, result: WrkResult) -> HTTPRow:
        row = HTTPRow(key, label, result)
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
        lines = [f"{'target':<44}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us':>8}   ratio"]
        for row in self.http:
            r = row.result
            if r is None:
                lines.append(f"{row.label:<44}  {row.skipped}")
                continue
            ratio = f"{row.ratio:.2f}x of {row.ratio_of}" if row.ratio is not None else ""
            cpu = f"{row.cpu_us:>8.0f}" if row.cpu_us is not None else f"{'':>8}"
            lines.append(
                f"{row.label:<44}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{cpu}"
                f"   {ratio}".rstrip()
            )
        if self.fanout is not None:
            f = self.fanout
            label = f"fanout {f.subscribers} subs x {f.events} events"
            lines.append(
                f"{label:<44}{f.notifications_per_s:>10.0f}{f.p50_ms:>9.1f}{f.p99_ms:>9.1f}{'':>8}"
                "   notif/s; publish-to-receive latency"
            )
        return "\n".join(lines)

    def text(self) -> str:
        s = self.settings
        parts = [
            f"graphql-service benchmark: {os.cpu_count()} CPUs, 1-minute load average "
            f"{self.loadavg_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; "
            f"wrk -t{s.threads} -c{s.connections}, {s.duration_s:g} s per target after "
            f"{s.warmup_s:g} s warm-up. Compare ratios, not absolute figures.",
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
                }
                for row in self.http
            ],
            "fanout": dataclasses.asdict(self.fanout) if self.fanout else None,
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
