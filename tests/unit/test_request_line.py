"""The worker's request line, built in one dict display, is byte for byte the line the general
path builds (``_request_fields`` then ``FastLines.emit``), also when its values wait in
``LineWriter.defer`` and the line is built in a batch among other lines; ``duration_ms`` equals
``round(seconds * 1000, 3)``; ``_Timestamp.at`` is the ISO 8601 time of its nanoseconds;
``LineWriter``'s preallocated buffer writes every line once, in order, whatever their sizes.
All over generated inputs."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import math
import os
import tempfile
import time
from typing import Any, TextIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.http import HTTPRequest, HTTPResponse
from service.observability.logging import (
    FastLines,
    LineWriter,
    Logs,
    _request_fields,
    _RequestLines,
    _Timestamp,
    duration_ms,
)
from service.settings import Settings

# Text as clients send it, plus lone surrogates (orjson refuses them: the fallback encoder runs).
texts = st.text(max_size=12) | st.sampled_from(["", "\ud800", "é", '"\\\n', "%b%s%%", "unix"])
optional_texts = st.none() | texts


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[HTTPRequest, HTTPResponse, float]:
    request = HTTPRequest(
        method=draw(st.sampled_from(["GET", "POST", "OPTIONS"])),
        path=draw(texts),
        query_string="",
        headers={},
        body=b"",
        remote=draw(optional_texts),
        request_id=draw(texts),
    )
    response = HTTPResponse(
        status=draw(st.integers(100, 599) | st.sampled_from([200, 499, 500])),
        headers=[],
        body=b"",
        operation_type=draw(st.sampled_from(["query", "mutation", "subscription", "unknown"])),
        operation_name=draw(optional_texts),
        user=draw(optional_texts),
    )
    return request, response, draw(durations)


durations = st.one_of(
    st.floats(min_value=0.0, max_value=100.0),
    st.floats(allow_nan=False),
    # Halfway cases between two multiples of a microsecond, where rounding is delicate.
    st.integers(0, 10**9).map(lambda n: (n + 0.5) / 1e6),
    st.integers(0, 10**9).map(lambda n: n / 1e6),
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(durations, st.just(math.inf), st.just(-math.inf), st.just(math.nan)))
def test_duration_ms_is_rounded_milliseconds(seconds: float) -> None:
    expected = round(seconds * 1000.0, 3)
    got = duration_ms(seconds)
    if math.isnan(expected):
        assert math.isnan(got)
        return
    assert got == expected and math.copysign(1, got) == math.copysign(1, expected)


def _logs(stream: TextIO, slot: int | None, level: int) -> Logs:
    return Logs(Settings(), slot, [], object, stream, level=level)


def _general_line(
    exchange: tuple[HTTPRequest, HTTPResponse, float], slot: int, level: int
) -> bytes:
    """The line of ``exchange`` as the general path builds it (b"" when ``level`` hides it)."""
    request, response, seconds = exchange
    stream = io.StringIO()
    error = response.status >= 500
    if level <= (logging.ERROR if error else logging.INFO):
        fields = _request_fields(request, response, seconds)
        FastLines(LineWriter(stream), slot).emit(
            "service.request", "error" if error else "info", "request", fields
        )
    return stream.getvalue().encode("utf-8", "surrogatepass")


# Nanoseconds since the epoch, up to 2100.
moments = st.integers(0, 4_102_444_800 * 10**9 - 1)


@settings(max_examples=600, deadline=None)
@given(
    exchanges(),
    st.integers(0, 64),
    st.sampled_from([logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR]),
    moments,
)
def test_the_worker_line_is_the_general_line(
    exchange: tuple[HTTPRequest, HTTPResponse, float], slot: int, level: int, moment: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        # One clock for both lines: they must then match byte for byte.
        patch.setattr(time, "time_ns", lambda: moment)
        fast_stream = io.StringIO()
        _logs(fast_stream, slot, level).request_logger()(*exchange)
        general = _general_line(exchange, slot, level)
    fast = fast_stream.getvalue().encode("utf-8", "surrogatepass")
    assert fast == general
    if general:
        assert fast.count(b"\n") == 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=300).map(lambda b: b + b"\n"), max_size=40),
    st.integers(1, 512),
    st.lists(st.integers(0, 39), max_size=5),
)
def test_line_writer_writes_every_line_once_in_order(
    lines: list[bytes], capacity: int, flush_after: list[int]
) -> None:
    with tempfile.TemporaryFile("w+b") as raw:
        stream: Any = open(os.dup(raw.fileno()), "w")  # noqa: SIM115 - closed below
        try:
            writer = LineWriter(stream, capacity=capacity)
            writer.fd = stream.fileno()
            for index, line in enumerate(lines):
                writer.write(line)
                if index in flush_after:
                    writer.flush()
            writer.flush()
        finally:
            stream.close()
        raw.seek(0)
        assert raw.read() == b"".join(lines)


async def test_under_a_loop_lines_wait_for_the_flush() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")  # closed below
    try:
        writer = LineWriter(stream, capacity=64)
        writer.write(b"a" * 40 + b"\n")
        assert writer.scheduled is not None  # pending, not yet written
        writer.write(b"b" * 40 + b"\n")  # does not fit: the first goes out, the second waits
        assert os.read(read_end, 1000) == b"a" * 40 + b"\n"
        writer.write(b"c" * 100 + b"\n")  # larger than the buffer: pending first, then itself
        assert os.read(read_end, 1000) == b"b" * 40 + b"\n" + b"c" * 100 + b"\n"
        writer.write(b"d\n")
        writer.flush()
        assert os.read(read_end, 1000) == b"d\n"
        assert writer.scheduled is None
    finally:
        stream.close()
        os.close(read_end)


# What happens to a worker's writer: a request line, another line written, a flush.
steps = st.lists(
    st.one_of(
        exchanges().map(lambda exchange: ("request", exchange)),
        st.binary(min_size=1, max_size=80).map(lambda b: ("write", b + b"\n")),
        st.just(("flush", None)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    steps,
    st.integers(1, 8),
    st.integers(64, 4096),
    st.sampled_from([logging.INFO, logging.WARNING, logging.ERROR]),
    moments,
    st.integers(1, 4),
)
def test_deferred_request_lines_keep_their_bytes_and_order_under_a_loop(
    script: list[tuple[str, Any]],
    defer_max: int,
    capacity: int,
    level: int,
    moment: int,
    templates_max: int,
) -> None:
    slot = 3

    async def run(stream: Any) -> None:
        logs = _logs(stream, slot, level)
        logs.writer = LineWriter(stream, capacity=capacity)
        logs.writer.fd = stream.fileno()
        log_request = logs.request_logger()
        for kind, value in script:
            if kind == "request":
                log_request(*value)
            elif kind == "write":
                logs.writer.write(value)
            else:
                logs.flush()
        logs.flush()
        assert logs.writer.scheduled is None and not logs.writer.deferred

    with tempfile.TemporaryFile("w+b") as raw, pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "time_ns", lambda: moment)
        patch.setattr(LineWriter, "DEFER_MAX", defer_max)
        # Few templates and values kept: the caches are cleared and refilled along the way.
        patch.setattr(_RequestLines, "MAX", templates_max)
        expected = b""
        for kind, value in script:
            if kind == "request":
                expected += _general_line(value, slot, level)
            elif kind == "write":
                expected += value
        stream: Any = open(os.dup(raw.fileno()), "w")  # noqa: SIM115 - closed below
        try:
            asyncio.run(run(stream))
        finally:
            stream.close()
        raw.seek(0)
        assert raw.read() == expected


async def test_a_deferred_request_line_waits_for_the_flush_or_a_full_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LineWriter, "DEFER_MAX", 16)  # a batch the pipe holds unread
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")  # closed below
    try:
        logs = _logs(stream, 0, logging.INFO)
        log_request = logs.request_logger()
        exchange = (
            HTTPRequest("POST", "/graphql", "", {}, b"", "127.0.0.1", "r1"),
            HTTPResponse(200, [], b"", "query", "Q", "alice"),
            0.001,
        )
        log_request(*exchange)
        assert logs.writer.deferred and logs.writer.scheduled is not None
        os.set_blocking(read_end, False)
        with pytest.raises(BlockingIOError):  # nothing written yet
            os.read(read_end, 10_000)
        for _ in range(LineWriter.DEFER_MAX - 1):  # a full batch is built, still not written
            log_request(*exchange)
        assert not logs.writer.deferred and logs.writer.used > 0
        logs.flush()
        lines = os.read(read_end, 1_000_000).splitlines()
        assert len(lines) == LineWriter.DEFER_MAX
        assert {json.loads(line)["user"] for line in lines} == {"alice"}
    finally:
        stream.close()
        os.close(read_end)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 4_102_444_800 * 10**9 - 1))
def test_timestamp_at_is_the_iso_time_of_its_nanoseconds(time_ns: int) -> None:
    second, micros = divmod(time_ns // 1000, 1_000_000)
    moment = datetime.datetime.fromtimestamp(second, datetime.UTC)
    expected = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"
    stamp = _Timestamp()
    assert stamp.at(time_ns) == expected
    assert stamp.at(time_ns) == expected  # the second's template, cached


def test_the_request_line_caches_stay_bounded() -> None:
    lines = _RequestLines(_Timestamp(), 1, 0)
    entries = [
        (f"r{n}", "GET", f"/p{n}", 200, 0.001, "query", f"Op{n}", f"10.{n}:1", f"u{n}", 0)
        for n in range(3 * _RequestLines.MAX)
    ]
    rendered = lines(entries).splitlines()
    assert len(rendered) == len(entries)
    assert [json.loads(line)["path"] for line in rendered] == [entry[2] for entry in entries]
    assert 0 < len(lines.templates) <= _RequestLines.MAX
    assert 0 < len(lines.values) <= _RequestLines.MAX
