"""Benchmark settings: one frozen object read from ``BENCH_*`` environment variables."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True, slots=True)
class BenchSettings:
    """How long and how hard to push; the defaults keep a full run under about 3 minutes.

    ``peers`` adds about ``peer_rounds`` x 5 targets x (warm-up + duration): 1.5 minutes;
    ``bundle`` about ``bundle_rounds`` x 5 targets x ``bundle_seconds``: 2.5 minutes.
    """

    duration_s: float = 5.0  # BENCH_SECONDS: each measured wrk run
    warmup_s: float = 1.0  # BENCH_WARMUP_SECONDS: an unrecorded wrk run before each target
    threads: int = 2  # BENCH_THREADS: wrk -t
    connections: int = 50  # BENCH_CONNECTIONS: wrk -c
    subscribers: int = 1000  # BENCH_SUBSCRIBERS
    idle_connections: int = 10_000  # BENCH_IDLE_CONNECTIONS: idle WebSockets held at once
    events: int = 200  # BENCH_EVENTS: timed broadcasts
    window: int = 1  # BENCH_WINDOW: broadcasts in flight (not yet received by every subscriber)
    peer_rounds: int = 3  # BENCH_PEER_ROUNDS: interleaved wrk runs per target in ``peers``
    # ``bundle``: BENCH_BUNDLE_ROUNDS rounds of BENCH_BUNDLE_SECONDS per target, paired round by
    # round: what logs and metrics cost is a difference of about a tenth, and on a shared box
    # a round drifts by more than that; many short rounds resolve it, three long ones do not.
    bundle_rounds: int = 9
    bundle_seconds: float = 3.0

    def __post_init__(self) -> None:
        if self.duration_s < 1 or self.threads < 1 or self.connections < self.threads:
            raise ValueError("need BENCH_SECONDS >= 1 and BENCH_CONNECTIONS >= BENCH_THREADS >= 1")
        if self.subscribers < 1 or self.events < 1 or self.window < 1:
            raise ValueError("need BENCH_SUBSCRIBERS, BENCH_EVENTS and BENCH_WINDOW >= 1")
        if self.peer_rounds < 1 or self.bundle_rounds < 1:
            raise ValueError("need BENCH_PEER_ROUNDS >= 1 and BENCH_BUNDLE_ROUNDS >= 1")
        if self.bundle_seconds < 1:
            raise ValueError("need BENCH_BUNDLE_SECONDS >= 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BenchSettings:
        env = os.environ if environ is None else environ

        def read(name: str, kind: type[float] | type[int], default: float) -> float:
            raw = env.get(name)
            if raw is None or not raw.strip():
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"environment variable {name}: not a number: {raw!r}") from None
            if value < 0:
                raise ValueError(f"environment variable {name}: must not be negative: {raw!r}")
            return value

        d = cls()
        return cls(
            duration_s=read("BENCH_SECONDS", float, d.duration_s),
            warmup_s=read("BENCH_WARMUP_SECONDS", float, d.warmup_s),
            threads=int(read("BENCH_THREADS", int, d.threads)),
            connections=int(read("BENCH_CONNECTIONS", int, d.connections)),
            subscribers=int(read("BENCH_SUBSCRIBERS", int, d.subscribers)),
            idle_connections=int(read("BENCH_IDLE_CONNECTIONS", int, d.idle_connections)),
            events=int(read("BENCH_EVENTS", int, d.events)),
            window=int(read("BENCH_WINDOW", int, d.window)),
            peer_rounds=int(read("BENCH_PEER_ROUNDS", int, d.peer_rounds)),
            bundle_rounds=int(read("BENCH_BUNDLE_ROUNDS", int, d.bundle_rounds)),
            bundle_seconds=read("BENCH_BUNDLE_SECONDS", float, d.bundle_seconds),
        )
