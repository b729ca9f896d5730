"""Log lines: JSON with the required fields, one renderer for structlog, stdlib and gunicorn.

Each test runs its script in a fresh interpreter so the process-wide setup it makes (the root
handler, structlog's configuration) never leaks into other tests; the script's stderr is the log
stream under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"timestamp", "level", "event", "logger", "pid"}

PRELUDE = """
import logging, os, sys
import structlog
from service.settings import Settings
from service.engine.http import HTTPRequest, HTTPResponse
from service.observability.logging import clear_request_context, configure_logging, get_logger
"""


def run(script: str, **env: str) -> tuple[list[str], str]:
    """Run ``PRELUDE + script``; return its stderr lines and its stdout."""
    environ = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "LOG_LEVEL"}}
    environ.update(env)
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr.splitlines(), result.stdout


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    records = []
    for line in lines:
        record = json.loads(line)  # every line is one JSON object
        assert isinstance(record, dict), line
        assert set(record) >= REQUIRED, line
        assert record["timestamp"].endswith("Z") and "T" in record["timestamp"], line
        records.append(record)
    return records


def by_event(records: list[dict[str, Any]], event: str) -> dict[str, Any]:
    [record] = [r for r in records if r["event"] == event]
    return record


def test_every_line_is_json_with_the_required_fields() -> None:
    lines, stdout = run(
        """
        configure_logging(Settings(), slot=3)
        configure_logging(Settings(), slot=3)  # idempotent: still one line per event
        structlog.get_logger().info("native", answer=42)
        logging.getLogger("service.engine").info("stdlib %s", "formatted")
        logging.getLogger("asyncio").debug("below the level: not shown")
        print(os.getpid())
        """
    )
    records = json_lines(lines)
    assert len(records) == 2
    pid = int(stdout)
    native = by_event(records, "native")
    assert native["answer"] == 42
    assert native["level"] == "info"
    assert native["logger"] == "service"
    stdlib = by_event(records, "stdlib formatted")
    assert stdlib["logger"] == "service.engine"
    for record in records:
        assert record["pid"] == pid
        assert record["slot"] == 3


def test_the_level_comes_from_settings() -> None:
    lines, _ = run(
        """
        configure_logging(Settings(log_level="warning"))
        structlog.get_logger().info("quiet")
        logging.getLogger("service").info("quiet too")
        structlog.get_logger().warning("loud")
        logging.getLogger("service").error("loud too")
        """
    )
    records = json_lines(lines)
    assert [r["event"] for r in records] == ["loud", "loud too"]
    assert [r["level"] for r in records] == ["warning", "error"]
    assert all("slot" not in r for r in records)  # no slot outside a supervised worker


def test_request_line_fields() -> None:
    lines, _ = run(
        """
        log_request = configure_logging(Settings(), slot=1).request_logger()
        structlog.contextvars.bind_contextvars(stale="from an earlier request")
        clear_request_context()
        request = HTTPRequest(
            "POST", "/graphql", "", {}, b"{}", remote="10.0.0.1:5555", request_id="req-1"
        )
        response = HTTPResponse(
            200, [], b"{}", operation_type="query", operation_name="Notes", user="alice"
        )
        log_request(request, response, 0.0123456)
        anonymous = HTTPRequest("GET", "/graphql", "query={x}", {}, b"", request_id="req-2")
        log_request(anonymous, HTTPResponse(500, [], b""), 0.5)
        """
    )
    records = json_lines(lines)
    first, second = records
    assert first["event"] == "request"
    assert first["logger"] == "service.request"
    assert first["request_id"] == "req-1"
    assert first["slot"] == 1
    assert first["method"] == "POST"
    assert first["path"] == "/graphql"
    assert first["status"] == 200
    assert first["duration_ms"] == 12.346
    assert first["operation_type"] == "query"
    assert first["operation_name"] == "Notes"
    assert first["user"] == "alice"
    assert first["remote"] == "10.0.0.1:5555"
    assert first["level"] == "info"
    assert "stale" not in first
    assert second["request_id"] == "req-2"
    assert second["status"] == 500
    assert second["level"] == "error"
    assert second["operation_type"] == "unknown"
    assert second["operation_name"] is None
    assert "user" not in second


def test_ws_operation_line() -> None:
    lines, _ = run(
        """
        log_ws_operation = configure_logging(Settings(), slot=0).ws_operation_logger()
        log_ws_operation(
            request_id="req-9", subprotocol="graphql-transport-ws", op_id="op-1",
            operation_type="subscription", operation_name="OnNote", status="cancelled",
            duration_s=2.0, user="bob",
        )
        """
    )
    [record] = json_lines(lines)
    assert record["event"] == "ws_operation"
    assert record["slot"] == 0
    assert {k: record[k] for k in ("request_id", "subprotocol", "op_id", "status", "user")} == {
        "request_id": "req-9",
        "subprotocol": "graphql-transport-ws",
        "op_id": "op-1",
        "status": "cancelled",
        "user": "bob",
    }
    assert record["operation_type"] == "subscription"
    assert record["operation_name"] == "OnNote"
    assert record["duration_ms"] == 2000.0


def test_the_latest_configuration_sets_the_slot() -> None:
    lines, _ = run(
        """
        first = configure_logging(Settings(), slot=1)
        logs = configure_logging(Settings(), slot=2)  # e.g. a worker given another slot
        structlog.get_logger().info("native")
        logging.getLogger("gunicorn.error").info("stdlib")
        get_logger("service.named", key="value").info("named")
        request = HTTPRequest("GET", "/healthz", "", {}, b"", request_id="req-3")
        logs.request_logger()(request, HTTPResponse(200, [], b""), 0.001)
        logs.ws_operation_logger()(
            request_id="req-4", subprotocol="graphql-ws", op_id="1", operation_type="query",
            operation_name=None, status="complete", duration_s=0.0, user=None,
        )
        # A Logs is a value: the loggers it hands out keep the slot of the call that made it.
        first.request_logger()(request, HTTPResponse(200, [], b""), 0.001)
        """
    )
    records = json_lines(lines)
    assert [(r["event"], r["logger"], r["slot"]) for r in records] == [
        ("native", "service", 2),
        ("stdlib", "gunicorn.error", 2),
        ("named", "service.named", 2),
        ("request", "service.request", 2),
        ("ws_operation", "service.ws", 2),
        ("request", "service.request", 1),
    ]
    assert records[2]["key"] == "value"


def test_a_forked_child_logs_its_own_pid() -> None:
    lines, stdout = run(
        """
        configure_logging(Settings())  # the arbiter
        logging.getLogger("gunicorn.error").info("arbiter")
        child = os.fork()
        if child == 0:
            code = 1
            try:
                # Before its own configure_logging a worker logs through the arbiter's setup.
                logging.getLogger("gunicorn.error").info("booting")
                structlog.get_logger().info("booting native")
                logs = configure_logging(Settings(), slot=7)
                request = HTTPRequest("GET", "/graphql", "", {}, b"", request_id="req-5")
                logs.request_logger()(request, HTTPResponse(200, [], b""), 0.001)
                logging.getLogger("gunicorn.error").info("worker")
                code = 0
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        print(os.getpid(), child)
        """
    )
    parent, child = (int(pid) for pid in stdout.split())
    records = {r["event"]: r for r in json_lines(lines)}
    assert set(records) == {"arbiter", "booting", "booting native", "request", "worker"}
    assert records["arbiter"]["pid"] == parent
    for event in ("booting", "booting native", "request", "worker"):
        assert records[event]["pid"] == child, event
    for event in ("arbiter", "booting", "booting native"):
        assert "slot" not in records[event], event
    assert records["request"]["slot"] == records["worker"]["slot"] == 7


def test_exceptions_are_structured_tracebacks_with_the_request_id() -> None:
    lines, _ = run(
        """
        from service.engine.errors import default_exception_handler
        configure_logging(Settings())
        def resolver():
            secret = "hunter2"
            raise ValueError("bad input", len(secret))
        try:
            resolver()
        except ValueError as exc:
            default_exception_handler(exc, {"request_id": "req-42"})
            structlog.get_logger().exception("native failure", request_id="req-43")
        """
    )
    stdlib, native = json_lines(lines)
    assert stdlib["event"] == "unhandled exception in resolver"
    assert stdlib["logger"] == "service.engine"
    assert stdlib["level"] == "error"
    assert stdlib["request_id"] == "req-42"
    assert native["request_id"] == "req-43"
    for record in (stdlib, native):
        [exception] = record["exception"]
        assert exception["exc_type"] == "ValueError"
        assert exception["exc_value"] == "('bad input', 7)"
        assert exception["frames"][-1]["name"] == "resolver"
        assert "hunter2" not in json.dumps(record)  # no frame locals in logs
    assert not any("Traceback" in line for line in lines)


def test_console_format_is_not_json() -> None:
    lines, _ = run(
        """
        configure_logging(Settings(log_format="console"), slot=2)
        structlog.get_logger().info("native line", key="value")
        logging.getLogger("gunicorn.error").warning("stdlib line")
        try:
            1 / 0
        except ZeroDivisionError:
            logging.getLogger("service").exception("failed")
        """
    )
    assert lines
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
    text = "\n".join(lines)
    assert "native line" in text and "key=value" in text and "slot=2" in text
    assert "stdlib line" in text
    assert "ZeroDivisionError" in text


def test_settings_from_the_environment() -> None:
    lines, _ = run(
        """
        configure_logging(Settings.from_env())
        logging.getLogger("service").info("hidden")
        logging.getLogger("service").warning("shown")
        """,
        LOG_FORMAT="json",
        LOG_LEVEL="WARNING",
    )
    assert [r["event"] for r in json_lines(lines)] == ["shown"]


def test_bad_settings_are_refused() -> None:
    _, stdout = run(
        """
        for bad in (Settings(log_format="xml"), Settings(log_level="loud")):
            try:
                configure_logging(bad)
            except ValueError as exc:
                print(exc)
        """
    )
    assert "LOG_FORMAT" in stdout and "LOG_LEVEL" in stdout


def test_gunicorn_logger_renders_through_the_same_renderer() -> None:
    lines, _ = run(
        """
        from gunicorn.config import Config
        from service.supervisor.glogging import StructlogGunicornLogger
        cfg = Config()
        cfg.set("logger_class", "service.supervisor.glogging.StructlogGunicornLogger")
        logger = cfg.logger_class(cfg)
        assert isinstance(logger, StructlogGunicornLogger)
        logger.error_log.info("x")
        logger.info("Booting worker with pid: %s", 123)
        logger.setup(cfg)  # gunicorn re-runs setup on reload: no duplicate lines after it
        logger.warning("after reload")
        configure_logging(Settings(), slot=5)  # a worker after fork
        logger.info("in a worker")
        """,
        LOG_FORMAT="json",
    )
    records = json_lines(lines)
    assert [r["event"] for r in records] == [
        "x",
        "Booting worker with pid: 123",
        "after reload",
        "in a worker",
    ]
    assert all(r["logger"] == "gunicorn.error" for r in records)
    assert records[2]["level"] == "warning"
    assert "slot" not in records[0]
    assert records[3]["slot"] == 5


def test_unserializable_values_never_break_a_log_call() -> None:
    lines, _ = run(
        """
        configure_logging(Settings())
        loop = []
        loop.append(loop)
        structlog.get_logger().info("odd", thing=object(), big=2**70)
        structlog.get_logger().info("circular", value=loop)
        logging.getLogger("service").info("extra", extra={"thing": object()})
        """
    )
    odd, circular, extra = json_lines(lines)
    assert odd["big"] == 2**70 and odd["thing"].startswith("<object object")
    assert circular["event"] == "circular" and circular["value"] == "[[...]]"
    assert extra["thing"].startswith("<object object")
