"""Wire codes are spelled once, and every error code is counted under its own name."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from service.engine.errors import METRIC_CODES, OTHER, error_code
from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.engine.recorder import NullRecorder
from service.protocols.codes import CloseCode, ErrorCode, is_sendable
from service.settings import Settings
from support.schemas import schema


class ErrorLog(NullRecorder):
    """A recorder that keeps the error codes it was given."""

    __slots__ = ("codes",)

    def __init__(self) -> None:
        self.codes: list[str] = []

    def error(self, code: str) -> None:
        self.codes.append(code)


def test_every_error_code_is_its_own_metric_label() -> None:
    for code in ErrorCode:
        assert error_code({"message": "m", "extensions": {"code": code.value}}) == code
    assert set(METRIC_CODES) == {*ErrorCode, OTHER}
    assert error_code({"message": "m", "extensions": {"code": "MADE_UP"}}) == OTHER
    assert error_code({"message": "m"}) == OTHER


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "status", "code"),
    [
        ("POST", "/nope", {"content-type": "application/json"}, b"{}", 404, ErrorCode.NOT_FOUND),
        ("PUT", "/graphql", {}, b"", 405, ErrorCode.METHOD_NOT_ALLOWED),
        ("GET", "/graphql", {"accept": "text/html"}, b"", 406, ErrorCode.NOT_ACCEPTABLE),
        ("POST", "/graphql", {"content-type": "text/plain"}, b"x", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
async def test_refusals_are_counted_under_their_code(
    method: str, path: str, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    recorder = ErrorLog()
    core = HTTPCore(Engine(schema, Settings(), recorder=recorder))
    request = HTTPRequest(method, path, "query={hello}", headers, body)
    request.request_id = RequestIds().for_headers(headers)
    result: Any = core.handle(request)
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse) and result.status == status
    assert recorder.codes == [code]


def test_close_codes_named_as_the_specs_name_them() -> None:
    assert CloseCode.InvalidFramePayloadData == 1007
    assert CloseCode.PolicyViolation == 1008
    assert CloseCode.ServiceRestart == 1012
    assert CloseCode.SubprotocolNotAcceptable == 4406
    for code in CloseCode:
        assert is_sendable(code), code
    for never_sent in (1005, 1006, 1015, 999, 5000):
        assert not is_sendable(never_sent)


def test_repeat_filter_logs_a_burst_once_per_interval_with_a_count() -> None:
    import logging

    from service.observability.logging import RepeatFilter

    now = [0.0]
    repeat = RepeatFilter(interval_s=10.0, clock=lambda: now[0])

    def record(message: str = "database unavailable: %s") -> logging.LogRecord:
        return logging.LogRecord("service.engine", logging.ERROR, "f", 1, message, ("x",), None)

    first = record()
    assert repeat.filter(first) and not hasattr(first, "repeated")
    assert [repeat.filter(record()) for _ in range(500)] == [False] * 500
    assert repeat.filter(record("another message"))  # a different message is not held back
    other = logging.LogRecord(
        "service.engine", logging.ERROR, "f", 1, "database unavailable: %s", ("y",), None
    )
    assert repeat.filter(other)  # nor the same template with other arguments
    now[0] = 10.5
    after = record()
    assert repeat.filter(after) and getattr(after, "repeated", None) == 500
