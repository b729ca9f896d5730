"""The schema every peer serves, and how to tell that a server answers it correctly.

``SDL`` is the whole schema; each peer builds it its own way (graphene classes, a strawberry
type, ariadne's SDL-first binding) and ``check_server`` proves over HTTP, before any timing,
that what a peer serves is this schema and that it greets as expected.
"""

from __future__ import annotations

import json
from typing import cast

from graphql import build_client_schema, build_schema, get_introspection_query, print_schema
from graphql.utilities import IntrospectionQuery

from bench.procs import http_call

SDL = """\
type Query {
  hello(name: String): String!
}
"""
QUERY = "{ hello }"
# What every peer must answer to QUERY (parsed JSON; no errors, no extensions).
EXPECTED = {"data": {"hello": "Hello, world!"}}


def greet(name: str | None) -> str:
    return f"Hello, {name or 'world'}!"


class WrongAnswer(RuntimeError):
    """A peer served another schema or answered wrongly; its figures would mean nothing."""


def _post(port: int, path: str, document: str) -> dict[str, object]:
    status, body = http_call(port, "POST", path, json.dumps({"query": document}).encode())
    if status != 200:
        raise WrongAnswer(f"{document[:40]!r} on :{port}{path} answered {status}: {body[:300]!r}")
    try:
        result = json.loads(body)
    except ValueError:
        raise WrongAnswer(f"{document[:40]!r} on :{port}{path}: not JSON: {body[:300]!r}") from None
    if not isinstance(result, dict):
        raise WrongAnswer(f"{document[:40]!r} on :{port}{path}: not an object: {body[:300]!r}")
    return result


def answers(port: int, path: str = "/graphql") -> bool:
    """Whether ``QUERY`` POSTed to the server on ``port`` gets a 200 (it is up)."""
    return http_call(port, "POST", path, json.dumps({"query": QUERY}).encode())[0] == 200


def served_sdl(port: int, path: str = "/graphql") -> str:
    """The schema the server on ``port`` serves, printed from its introspection answer."""
    result = _post(port, path, get_introspection_query())
    data = result.get("data")
    if not isinstance(data, dict) or result.get("errors"):
        raise WrongAnswer(f"introspection on :{port}{path} failed: {result.get('errors')}")
    try:
        return print_schema(build_client_schema(cast(IntrospectionQuery, data)))
    except TypeError as exc:  # graphql-core's word for a malformed introspection result
        raise WrongAnswer(f"introspection on :{port}{path}: {exc}") from None


def check_server(port: int, path: str = "/graphql") -> None:
    """Raise ``WrongAnswer`` unless the server serves ``SDL`` and greets correctly."""
    expected_sdl = print_schema(build_schema(SDL))
    sdl = served_sdl(port, path)
    if sdl != expected_sdl:
        raise WrongAnswer(f"schema on :{port}{path} differs:\n{sdl}\nexpected:\n{expected_sdl}")
    answers = {
        QUERY: EXPECTED,
        '{ hello(name: "bench") }': {"data": {"hello": "Hello, bench!"}},
    }
    for document, expected in answers.items():
        result = _post(port, path, document)
        if result != expected:
            raise WrongAnswer(f"{document!r} on :{port}{path} answered {result}, not {expected}")
