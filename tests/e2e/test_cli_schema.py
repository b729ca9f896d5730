"""`graphql-service schema`: the served schema as SDL, for code generators."""

from __future__ import annotations

import os
import subprocess
import sys

from graphql import build_schema, print_schema

import service.example.schema
from support import schemas

CLI = [sys.executable, "-m", "service.supervisor.cli", "schema"]


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "APP"}
    return subprocess.run(
        [*CLI, *args], env={**environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_prints_the_example_schema_by_default() -> None:
    done = run()
    assert done.returncode == 0, done.stderr
    expected = print_schema(service.example.schema.schema.graphql_schema)
    assert done.stdout == expected + "\n"
    # It is SDL a code generator can read back.
    rebuilt = build_schema(done.stdout)
    assert {"noteChanged", "onNewChatMessage", "countdown"} <= set(
        rebuilt.subscription_type.fields  # type: ignore[union-attr]
    )


def test_app_and_flag_choose_the_schema() -> None:
    expected = print_schema(schemas.schema.graphql_schema) + "\n"
    assert run(APP="support.schemas:schema").stdout == expected
    assert run("--app", "support.schemas:schema").stdout == expected


def test_a_bad_app_is_refused_with_its_reason() -> None:
    done = run("--app", "no.such.module:schema")
    assert done.returncode == 2
    assert "cannot load the schema 'no.such.module:schema'" in done.stderr
    assert run("--app", "service.example.schema").returncode == 2
