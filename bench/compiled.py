"""Compiled execution against graphql-core's ``execute``, in-process (``python -m bench.compiled``).

The schema is an in-memory graphene one: ``users(first: 100) { id name email }`` (300 fields,
graphene's default resolvers for the user fields) and ``{ hello }`` (one resolver). Both runs use
the engine's awaitable check and no middleware; each query's answers are compared before timing.
The figures are microseconds per execution (``execute`` alone: no parsing, validation or JSON,
which the engine caches or does the same way for both), and per request through ``Engine``
(document cache lookup, execution, error shaping, orjson), compiled execution off and on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import graphene
import orjson
from graphql import DocumentNode, ExecutionResult, execute, parse

from service.engine.compiled import Compiler
from service.engine.executor import Engine, Outcome, fast_is_awaitable
from service.settings import Settings

USERS = "{ users(first: 100) { id name email } }"
HELLO = "{ hello }"
QUERIES = {"users(first: 100)": USERS, "{ hello }": HELLO}


class User(graphene.ObjectType):
    id = graphene.ID(required=True)
    name = graphene.String(required=True)
    email = graphene.String(required=True)


class Person:
    __slots__ = ("email", "id", "name")

    def __init__(self, number: int) -> None:
        self.id = str(number)
        self.name = f"User {number}"
        self.email = f"user{number}@example.com"


PEOPLE = [Person(number) for number in range(1000)]


class Query(graphene.ObjectType):
    hello = graphene.String()
    users = graphene.List(graphene.NonNull(User), first=graphene.Int(default_value=10))

    def resolve_hello(root: Any, info: Any) -> str:
        return "Hello, world!"

    def resolve_users(root: Any, info: Any, first: int) -> list[Person]:
        return PEOPLE[:first]


schema = graphene.Schema(query=Query)


def per_call_us(run: Callable[[], Any], seconds: float) -> float:
    """Microseconds per call of ``run``: the best of five rounds of about ``seconds`` / 5."""
    calls = 1
    while True:  # calibrate: a batch of about 10 ms
        started = time.perf_counter()
        for _ in range(calls):
            run()
        elapsed = time.perf_counter() - started
        if elapsed > 0.01:
            break
        calls *= 2
    batches = max(1, int(seconds / 5 / elapsed))
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(batches * calls):
            run()
        best = min(best, (time.perf_counter() - started) / (batches * calls))
    return best * 1e6


def _runners(document: DocumentNode) -> tuple[Callable[[], Any], Callable[[], Any]]:
    graphql_schema = schema.graphql_schema
    compiler = Compiler(graphql_schema, is_awaitable=fast_is_awaitable)
    plans: dict[str | None, Any] = {}

    def core() -> Any:
        return execute(graphql_schema, document, is_awaitable=fast_is_awaitable)

    def compiled() -> Any:
        return compiler.execute(plans, document, None, None, None, None)

    return core, compiled


def _engine_runner(query: str, compiled: bool) -> Callable[[], bytes]:
    """One request through ``Engine``: cache lookup, execution, error shaping, JSON."""
    engine = Engine(schema, Settings(compiled_execution=compiled))

    def request() -> bytes:
        prepared = engine.prepare(query, None)
        assert isinstance(prepared, tuple)  # a short cached document: answered at once
        cached, operation_type, _ = prepared
        assert cached is not None
        outcome = engine.execute(cached, operation_type, None, None, None)
        assert isinstance(outcome, Outcome)
        return orjson.dumps(outcome.body)

    return request


def measure(seconds: float = 2.0) -> dict[str, tuple[float, float]]:
    """``{label: (graphql-core us, compiled us)}`` for each query, executed alone and as a
    request through the engine; raises if the two answer differently."""
    figures = {}
    for label, query in QUERIES.items():
        core, compiled = _runners(parse(query))
        expected, got = core(), compiled()
        if not isinstance(got, ExecutionResult) or got.formatted != expected.formatted:
            raise RuntimeError(f"{label}: compiled answered {got!r}, graphql-core {expected!r}")
        figures[f"{label} execution"] = (per_call_us(core, seconds), per_call_us(compiled, seconds))
        plain, fast = _engine_runner(query, False), _engine_runner(query, True)
        if plain() != fast():
            raise RuntimeError(f"{label}: the engine answers differently compiled")
        figures[f"{label} engine request"] = (
            per_call_us(plain, seconds),
            per_call_us(fast, seconds),
        )
    return figures


def lines(figures: dict[str, tuple[float, float]]) -> dict[str, str]:
    return {
        f"compiled {label}": (
            f"graphql-core {core:.1f} us, compiled {compiled:.1f} us: {core / compiled:.1f}x faster"
        )
        for label, (core, compiled) in figures.items()
    }


def main(argv: list[str]) -> int:
    seconds = float(argv[1]) if len(argv) > 1 else 2.0
    for label, line in lines(measure(seconds)).items():
        print(f"{label}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
