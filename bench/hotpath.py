"""Logs and metrics on the request hot path, in-process (``python -m bench hotpath``).

One ``HTTPProtocol`` of the native transport, wired by ``build_server`` as a supervisor worker
wires it (engine, HTTP core and routes, request ids), answers ``{ hello }`` POSTs with the
headers nginx forwards, one request per ``data_received`` call as a busy keep-alive connection
delivers them. Four variants, measured in interleaved rounds:

- ``shipped``: the default JSON request line (``Logs.request_logger``, written by
  ``LineWriter`` to ``/dev/null``: real ``write`` system calls) and ``PrometheusRecorder``,
  flushed to prometheus-client once a second as a worker does;
- ``logs``: the line only (``NullRecorder``); ``metrics``: the recorder only;
- ``quiet``: neither.

The figure is CPU µs per request (``time.process_time`` of this process over the round), and
the cost of logs and metrics as a share of throughput against ``quiet``. Here the response goes
to a transport that drops it, and nginx, wrk and socket writes are not in the process, so the
per-request total is smaller than through the bundle and the share an upper bound of theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
import uvloop

from service.engine.recorder import NullRecorder
from service.observability.logging import configure_logging
from service.observability.metrics import PrometheusRecorder
from service.server.application import load_app
from service.server.native import DeadlineSweeper, HTTPProtocol
from service.server.serve import build_server
from service.settings import Settings

SCHEMA_APP = "bench.peers.graphene_schema:schema"
VARIANTS = ("shipped", "logs", "metrics", "quiet")


def request_bytes(query: str, request_id: str) -> bytes:
    """One POST as nginx forwards it to a worker (``graphql-service.conf``'s headers)."""
    body = orjson.dumps({"query": query})
    head = (
        "POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-Real-IP: 127.0.0.1\r\n"
        "X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
        f"X-Request-ID: {request_id}\r\nConnection: \r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\n\r\n"
    )
    return head.encode() + body


class Sink:
    """A transport whose peer reads everything at once: counts responses, keeps the last."""

    def __init__(self) -> None:
        self.responses = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.responses += 1
        self.last = data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return "/tmp/worker0" if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("the server closed a keep-alive connection")


@dataclass
class Variant:
    name: str
    protocol: HTTPProtocol
    sink: Sink
    flush: Callable[[], None]


def build(name: str, settings: Settings, devnull: Any) -> tuple[HTTPProtocol, Sink, Any]:
    """A connection of a server wired for ``name`` (one of ``VARIANTS``)."""
    logs_on = name in ("shipped", "logs")
    metrics_on = name in ("shipped", "metrics")
    log_request = None
    if logs_on:
        # The worker's lines go to its stderr: here, /dev/null.
        with contextlib.redirect_stderr(devnull):
            log_request = configure_logging(settings, slot=0).request_logger()
    recorder: Any = PrometheusRecorder() if metrics_on else NullRecorder()
    server = build_server(
        load_app(SCHEMA_APP),
        [{"protocol": "unix", "path": "/nonexistent/never-bound"}],  # never started
        settings=settings,
        recorder=recorder,
        log_request=log_request,
    )
    protocol = HTTPProtocol(
        server.handler,
        settings,
        server.connections,
        DeadlineSweeper(asyncio.get_running_loop(), settings),
        server.ids,
        log_request=server.log_request,
    )
    sink = Sink()
    protocol.connection_made(sink)  # type: ignore[arg-type]
    return protocol, sink, recorder


async def _round(variant: Variant, requests: list[bytes]) -> float:
    """CPU µs per request over one pass of ``requests``."""
    feed = variant.protocol.data_received
    before_count = variant.sink.responses
    next_flush = time.monotonic() + 1.0
    start = time.process_time()
    for index, data in enumerate(requests):
        feed(data)
        if index % 64 == 63:
            await asyncio.sleep(0)  # the loop's turn: the log writer's timer, as in a worker
            if time.monotonic() >= next_flush:
                variant.flush()
                next_flush += 1.0
    await asyncio.sleep(0)
    spent = time.process_time() - start
    answered = variant.sink.responses - before_count
    if answered != len(requests):
        raise RuntimeError(f"{variant.name}: {answered} of {len(requests)} requests answered")
    if b'{"data":{"hello":' not in variant.sink.last:
        raise RuntimeError(f"{variant.name}: unexpected answer {variant.sink.last[-200:]!r}")
    return spent / len(requests) * 1e6


async def measure_hotpath(requests: int, rounds: int, devnull: TextIO) -> dict[str, list[float]]:
    """CPU µs per ``{ hello }`` request of each variant, one figure per round; the log lines
    go to ``devnull``."""
    settings = Settings(redis_url="", log_level="info", log_format="json")
    payloads = [request_bytes("{ hello }", f"{index:032x}") for index in range(requests)]
    variants = []
    for name in VARIANTS:
        protocol, sink, recorder = build(name, settings, devnull)
        variants.append(Variant(name, protocol, sink, recorder.flush))
    for variant in variants:  # warm up: caches, the compiled document
        await _round(variant, payloads[: min(2000, requests)])
    figures: dict[str, list[float]] = {variant.name: [] for variant in variants}
    for _ in range(rounds):
        for variant in variants:
            figures[variant.name].append(await _round(variant, payloads))
    return figures


def run_hotpath(requests: int, rounds: int) -> dict[str, list[float]]:
    """``measure_hotpath`` on a uvloop loop of its own; the process's logging is set back to
    stderr afterwards."""
    with open(os.devnull, "w") as devnull:
        try:
            return uvloop.run(measure_hotpath(requests, rounds, devnull))
        finally:
            configure_logging(Settings())


def hotpath_lines(figures: dict[str, list[float]]) -> dict[str, str]:
    """Report lines: median CPU µs per request of each variant, and the shares of throughput
    that logs, metrics and both cost against ``quiet``."""
    medians = {name: statistics.median(values) for name, values in figures.items()}
    quiet = medians["quiet"]
    lines = {
        f"hotpath {name}": f"{us:.1f} us CPU per {{ hello }} request (rounds: "
        + ", ".join(f"{value:.1f}" for value in figures[name])
        + ")"
        for name, us in medians.items()
    }
    for name in ("shipped", "logs", "metrics"):
        share = 1.0 - quiet / medians[name]
        lines[f"hotpath {name} cost"] = f"{share:.1%} of throughput against logs+metrics off"
    return lines


def main() -> None:
    requests = int(os.environ.get("HOTPATH_REQUESTS", "20000"))
    rounds = int(os.environ.get("HOTPATH_ROUNDS", "5"))
    for key, line in hotpath_lines(run_hotpath(requests, rounds)).items():
        print(f"{key}: {line}")


if __name__ == "__main__":
    main()
