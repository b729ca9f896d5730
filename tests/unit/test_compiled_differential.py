"""Compiled execution gives graphql-core's answers (issue 13).

Every case runs one document twice, each time with its own freshly made (but equal) data and
context: by graphql-core's ``execute`` and by ``service.engine.compiled``. The two must agree
exactly: the response as JSON text (so key order counts), each error's message, locations, path
and extensions in the same order, the kind of each error's original exception (the engine masks
by it), what every resolver saw of ``info``, and the order mutations ran in.

- Generated: hypothesis writes documents (``compiled_documents.py``) over four schemas
  (``support.schemas``, the graphene ``zoo``, the SDL ``fabric`` in ``compiled_schemas.py``, and
  the zoo again with middleware), and each runs with several seeds: clean, with errors and nulls,
  and with async resolvers and values. The plans are kept across the seeds of a document, as the
  engine keeps them across requests.
- Fixed: the behaviours graphql-core's own execution tests pin down (null propagation, lists,
  abstract types, directives, serial mutations, variables), as cases of our own.
- Engine: the same outcomes with ``compiled_execution`` on and off, including masking,
  middleware and subscription events; fallbacks are logged once.

Each generated test also counts the documents and requests that fell back to graphql-core
(``Stats``, printed with ``-s``): there must be none.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from graphql import (
    ExecutionResult,
    GraphQLSchema,
    build_schema,
    execute,
    parse,
    validate,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.engine.compiled import Compiler
from service.engine.executor import Engine, Outcome, fast_is_awaitable
from service.settings import Settings
from support.schemas import schema as support_schema
from tests.unit.compiled_documents import Operation, operations
from tests.unit.compiled_schemas import (
    LIST_VALUES,
    Context,
    Fabric,
    ZooContext,
    abstract_root,
    abstract_schema,
    fabric,
    fails,
    later,
    lists,
    lists_root,
    nulls,
    nulls_root,
    zoo,
)

pytestmark = [
    # graphql-core leaves the coroutines of a field's siblings unawaited when a non-null error
    # nulls their parent; both executors do, and Python warns about each.
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _collect_unawaited_coroutines() -> Iterator[None]:
    """Collect those coroutines here, under this module's filters, rather than in whichever
    test runs when the garbage collector next gets to them."""
    yield
    gc.collect()


SEEDS = ((0, False), (30, False), (30, True))  # (chaos %, async) per run of a document


#: ``COMPILED_EXAMPLES_SCALE=10`` runs ten times as many generated documents (a deeper search).
SCALE = float(os.environ.get("COMPILED_EXAMPLES_SCALE", "1"))


def generated(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def settle(loop: asyncio.AbstractEventLoop, result: Any) -> ExecutionResult:
    """The result, awaited if need be, once every task it left behind has finished (so that
    late errors of abandoned siblings are in both error lists when they are compared)."""
    if inspect.isawaitable(result):
        result = loop.run_until_complete(result)
    for _ in range(100):
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if not pending:
            break
        loop.run_until_complete(asyncio.wait(pending))
    assert isinstance(result, ExecutionResult)
    return result


def observed(result: ExecutionResult, context: Any) -> dict[str, Any]:
    errors = result.errors or []
    return {
        "response": json.dumps(result.formatted, default=lambda value: type(value).__name__),
        "originals": [type(error.original_error).__name__ for error in errors],
        "log": getattr(context, "log", None),
        "seen": getattr(context, "seen", None),
    }


@dataclasses.dataclass
class Stats:
    requests: int = 0
    fell_back: int = 0
    documents: int = 0
    documents_not_compiled: int = 0

    def line(self, name: str) -> str:
        return (
            f"{name}: {self.documents} documents, {self.requests} requests; fell back: "
            f"{self.documents_not_compiled} documents, {self.fell_back} requests"
        )


#: ``make(seed, chaos, use_async) -> (root_value, context)``
Maker = Callable[[int, int, bool], tuple[Any, Any]]


@dataclasses.dataclass
class Target:
    schema: GraphQLSchema
    make: Maker
    middleware: list[Any] | None = None
    compiler: Compiler = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.compiler = Compiler(
            self.schema, middleware=self.middleware, is_awaitable=fast_is_awaitable
        )

    def core(
        self, loop: asyncio.AbstractEventLoop, operation: Operation, document: Any, seed: Any
    ) -> Any:
        root, context = self.make(*seed)
        result = execute(
            self.schema,
            document,
            root,
            context,
            operation.variables,
            operation.operation_name,
            middleware=self.middleware,
            is_awaitable=fast_is_awaitable,
        )
        return observed(settle(loop, result), context)

    def compiled(
        self,
        loop: asyncio.AbstractEventLoop,
        operation: Operation,
        document: Any,
        plans: dict[Any, Any],
        seed: Any,
    ) -> Any:
        root, context = self.make(*seed)
        result = self.compiler.execute(
            plans, document, operation.operation_name, root, context, operation.variables
        )
        if result is None:
            return None
        return observed(settle(loop, result), context)


def differential(
    loop: asyncio.AbstractEventLoop,
    target: Target,
    operation: Operation,
    seed: int,
    stats: Stats,
    seeds: tuple[tuple[int, bool], ...] = SEEDS,
) -> None:
    document = parse(operation.source)
    assume(not validate(target.schema, document))
    plans: dict[Any, Any] = {}
    stats.documents += 1
    for number, (chaos, use_async) in enumerate(seeds):
        run_seed = (seed + number, chaos, use_async)
        expected = target.core(loop, operation, document, run_seed)
        got = target.compiled(loop, operation, document, plans, run_seed)
        stats.requests += 1
        if got is None:
            stats.fell_back += 1
            continue
        assert got == expected, f"{operation.source}\nvariables: {operation.variables}"
    if plans.get(operation.operation_name, True) is None:
        stats.documents_not_compiled += 1


def check_stats(stats: Stats, name: str) -> None:
    print(stats.line(name))
    assert stats.documents_not_compiled == 0, stats.line(name)
    assert stats.fell_back == 0, stats.line(name)


# --- the targets ------------------------------------------------------------------------------


def support_make(seed: int, chaos: int, use_async: bool) -> tuple[Any, Any]:
    return None, {"user": f"user{seed}"}


def zoo_make(seed: int, chaos: int, use_async: bool) -> tuple[Any, Any]:
    root = {"root": seed}
    context = ZooContext(
        seed,
        chaos,
        use_async=use_async,
        schema=zoo.graphql_schema,
        root=root,
        is_awaitable=fast_is_awaitable,
    )
    return root, context


def fabric_make(kind: str) -> Maker:
    def make(seed: int, chaos: int, use_async: bool) -> tuple[Any, Any]:
        root = Fabric(seed, chaos, use_async).root(kind)
        context = Context(
            seed,
            chaos,
            use_async=use_async,
            schema=fabric,
            root=root,
            is_awaitable=fast_is_awaitable,
        )
        return root, context

    return make


def recording_middleware(next_: Any, root: Any, info: Any, **args: Any) -> Any:
    """Records every call and shouts every string (after any awaiting)."""
    context = info.context
    if isinstance(context, Context):
        context.log.append(f"mw {info.parent_type.name}.{info.field_name} {info.path.as_list()}")
    result = next_(root, info, **args)
    if inspect.isawaitable(result):

        async def later() -> Any:
            value = await result
            return value.upper() if isinstance(value, str) else value

        return later()
    return result.upper() if isinstance(result, str) else result


class Doubler:
    """Middleware as an object with ``resolve``."""

    def resolve(self, next_: Any, root: Any, info: Any, **args: Any) -> Any:
        result = next_(root, info, **args)
        return result * 2 if isinstance(result, int) and not isinstance(result, bool) else result


SUPPORT = Target(support_schema.graphql_schema, support_make)
ZOO = Target(zoo.graphql_schema, zoo_make)
ZOO_MIDDLEWARE = Target(zoo.graphql_schema, zoo_make, [recording_middleware, Doubler()])
FABRIC_QUERY = Target(fabric, fabric_make("Query"))
FABRIC_MUTATION = Target(fabric, fabric_make("Mutation"))
STAMPS = {"Stamp": ['"t3"', '"t0"']}


# --- generated --------------------------------------------------------------------------------


def test_generated_support_schema(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()
    documents = operations(
        support_schema.graphql_schema,
        kinds=("query", "mutation"),
        exclude=frozenset({"Query.slow", "Mutation.tick"}),
    )

    @generated(250)
    @given(documents, st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, SUPPORT, operation, seed, stats, seeds=((0, False),))

    check()
    check_stats(stats, "support")


def test_generated_zoo(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()
    documents = operations(zoo.graphql_schema, scalar_literals=STAMPS)

    @generated(700)
    @given(documents, st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, ZOO, operation, seed, stats)

    check()
    check_stats(stats, "zoo")


def test_generated_zoo_mutations(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()
    documents = operations(zoo.graphql_schema, kinds=("mutation",), scalar_literals=STAMPS)

    @generated(200)
    @given(documents, st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, ZOO, operation, seed, stats)

    check()
    check_stats(stats, "zoo mutations")


def test_generated_zoo_with_middleware(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()
    documents = operations(zoo.graphql_schema, kinds=("query", "mutation"), scalar_literals=STAMPS)

    @generated(200)
    @given(documents, st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, ZOO_MIDDLEWARE, operation, seed, stats)

    check()
    check_stats(stats, "zoo with middleware")


def test_generated_fabric(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()

    @generated(700)
    @given(operations(fabric), st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, FABRIC_QUERY, operation, seed, stats)

    check()
    check_stats(stats, "fabric")


def test_generated_fabric_mutations(loop: asyncio.AbstractEventLoop) -> None:
    stats = Stats()

    @generated(150)
    @given(operations(fabric, kinds=("mutation",)), st.integers(0, 10**6))
    def check(operation: Operation, seed: int) -> None:
        differential(loop, FABRIC_MUTATION, operation, seed, stats)

    check()
    check_stats(stats, "fabric mutations")


# --- fixed cases ------------------------------------------------------------------------------


def same(
    loop: asyncio.AbstractEventLoop,
    schema: GraphQLSchema,
    source: str,
    make_root: Callable[[], Any],
    variables: dict[str, Any] | None = None,
    operation_name: str | None = None,
    middleware: list[Any] | None = None,
    make_context: Callable[[], Any] = lambda: None,
) -> ExecutionResult:
    """Run ``source`` both ways, assert the same outcome, return graphql-core's result."""
    document = parse(source)
    assert not validate(schema, document), validate(schema, document)
    context = make_context()
    expected = settle(
        loop,
        execute(
            schema,
            document,
            make_root(),
            context,
            variables,
            operation_name,
            middleware=middleware,
            is_awaitable=fast_is_awaitable,
        ),
    )
    compiler = Compiler(schema, middleware=middleware, is_awaitable=fast_is_awaitable)
    plans: dict[Any, Any] = {}
    for _ in range(2):  # the second run uses the plans the first one made
        compiled_context = make_context()
        result = compiler.execute(
            plans, document, operation_name, make_root(), compiled_context, variables
        )
        assert result is not None, "fell back to graphql-core"
        got = settle(loop, result)
        assert observed(got, compiled_context) == observed(expected, context), source
    assert plans[operation_name] is not None
    return expected


NULLS_CASES = [
    "{ level { plain nothing broken strict } }",
    "{ level { plain strictNothing } }",
    "{ level { strictBroken plain } }",
    "{ level { next { strictNext { strictBroken } } plain } }",
    "{ level { strictNext { strictNext { strictNothing } } } }",
    "{ strictLevel { strictNext { strictNothing } } }",
    "{ strictLevel { next { strictNothing } strictNext { nothing } } }",
    "{ level { later laterNothing laterBroken } }",
    "{ level { laterStrictNothing plain } }",
    "{ level { laterNext { laterStrictBroken } later } }",
    "{ level { laterStrictNext { laterStrictNext { laterStrictNothing } } } }",
    "{ strictLevel { laterStrictNext { laterStrictBroken } } }",
    "{ level { next { laterStrictBroken strictBroken } } }",
    "{ level { a: next { strict } b: laterNext { strictNothing } c: next { laterBroken } } }",
    # A nullable error that arrives after its parent was nulled by a sibling is dropped.
    "{ level { next { laterStrictBroken slowBroken } } }",
    "{ level { next { laterStrictBroken slowNext { laterBroken slowBroken } } } }",
    "{ level { laterNext { laterStrictNothing slowNext { slowBroken } } plain } }",
]


@pytest.mark.parametrize("source", NULLS_CASES)
def test_null_propagation(loop: asyncio.AbstractEventLoop, source: str) -> None:
    same(loop, nulls, source, nulls_root)


def test_null_propagation_stops_at_the_nearest_nullable_parent(
    loop: asyncio.AbstractEventLoop,
) -> None:
    result = same(
        loop, nulls, "{ level { next { strictNext { strictNothing } } plain } }", nulls_root
    )
    assert result.data == {"level": {"next": None, "plain": "plain 0"}}
    assert result.errors is not None
    assert [(error.message, error.path) for error in result.errors] == [
        (
            "Cannot return null for non-nullable field Level.strictNothing.",
            ["level", "next", "strictNext", "strictNothing"],
        )
    ]


def test_a_late_error_under_a_nulled_parent_is_dropped(loop: asyncio.AbstractEventLoop) -> None:
    result = same(loop, nulls, "{ level { next { laterStrictBroken slowBroken } } }", nulls_root)
    assert result.data == {"level": {"next": None}}
    assert [error.path for error in result.errors or []] == [["level", "next", "laterStrictBroken"]]


@pytest.mark.parametrize("name", sorted(LIST_VALUES))
def test_lists(loop: asyncio.AbstractEventLoop, name: str) -> None:
    for field in ("nullableOfNullable", "nullableOfStrict", "strictOfNullable", "strictOfStrict"):
        same(loop, lists, f"{{ lists {{ {field} }} }}", lambda: lists_root(name))
    for field in ("items", "strictItems"):
        same(loop, lists, f"{{ lists {{ {field} {{ n }} }} }}", lambda: lists_root(name))
    same(
        loop,
        lists,
        "{ lists { nullableOfNullable nullableOfStrict strictOfNullable strictOfStrict nested"
        " items { n } } }",
        lambda: lists_root(name),
    )


def _type_name(value: Any, info: Any, abstract_type: Any) -> Any:
    return value["kind"]


RESOLVE_TYPES: dict[str, Callable[..., Any] | None] = {
    "name": _type_name,
    "awaitable name": lambda value, info, abstract_type: later(lambda: value["kind"], 1),
    "none": lambda value, info, abstract_type: None,
    "awaitable none": lambda value, info, abstract_type: later(lambda: None, 1),
    "not a string": lambda value, info, abstract_type: 5,
    "unknown name": lambda value, info, abstract_type: "Unicorn",
    "not an object type": lambda value, info, abstract_type: "String",
    "the interface": lambda value, info, abstract_type: "Pet",
    "not a possible type": lambda value, info, abstract_type: "Human",
    "a type object": lambda value, info, abstract_type: info.schema.get_type(value["kind"]),
    "raises": lambda value, info, abstract_type: fails("resolve_type failed"),
    "default (no __typename, no is_type_of)": None,
}

IS_TYPES_OF: dict[str, Callable[..., Any] | None] = {
    "none": None,
    "by kind": lambda value, info, name: value["kind"] == name,
    "awaitable by kind": lambda value, info, name: later(lambda: value["kind"] == name, 1),
    "always false": lambda value, info, name: False,
    "raises": lambda value, info, name: fails("is_type_of failed"),
}

ABSTRACT_QUERY = """
{
  pets { __typename name ... on Dog { woofs } ... on Cat { meows } }
  pet { name ... on Cat { meows } }
  owners { __typename ... on Human { name } ... on Dog { woofs } }
  strictPets { name }
  dog { name woofs }
}
"""


@pytest.mark.parametrize("resolve_type", sorted(RESOLVE_TYPES))
@pytest.mark.parametrize("is_type_of", sorted(IS_TYPES_OF))
def test_abstract_types(
    loop: asyncio.AbstractEventLoop, resolve_type: str, is_type_of: str
) -> None:
    schema = abstract_schema(RESOLVE_TYPES[resolve_type], IS_TYPES_OF[is_type_of])
    same(loop, schema, ABSTRACT_QUERY, abstract_root)


def test_abstract_types_by_typename_field(loop: asyncio.AbstractEventLoop) -> None:
    schema = abstract_schema(None)

    def root() -> Any:
        data = abstract_root()
        for key in ("pets", "owners", "strictPets"):
            data[key] = [
                dict(item, __typename=item["kind"]) if item else item for item in data[key]
            ]
        data["pet"] = dict(data["pet"], __typename="Cat")
        return data

    result = same(loop, schema, ABSTRACT_QUERY, root)
    assert result.errors is None


DIRECTIVE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("{ a: hello @skip(if: true) b: hello @skip(if: false) }", {}),
    ("{ a: hello @include(if: true) b: hello @include(if: false) }", {}),
    ("{ hello @skip(if: true) @include(if: true) }", {}),
    ("{ hello @skip(if: false) @include(if: false) }", {}),
    ("{ hello @skip(if: false) @include(if: true) }", {}),
    ("query ($s: Boolean!) { a: hello @skip(if: $s) b: hello }", {"s": True}),
    ("query ($s: Boolean!) { a: hello @skip(if: $s) b: hello }", {"s": False}),
    ("query ($i: Boolean = true) { hello @include(if: $i) }", {}),
    ("query ($i: Boolean = true) { hello @include(if: $i) }", {"i": False}),
    ("query ($i: Boolean = true) { hello @include(if: $i) }", {"i": None}),
    ("query ($i: Boolean = true) { item { name @include(if: $i) } }", {"i": None}),
    ("query ($i: Boolean = true) { item { ... @include(if: $i) { name } } }", {"i": None}),
    ("{ item { ... on Item @skip(if: true) { name } child { name } } }", {}),
    ("{ item { ... @include(if: false) { name } ... { blob: name } } }", {}),
    ("{ item { ...F @skip(if: true) ...F } } fragment F on Item { name }", {}),
    ("{ item { ...F ...F @skip(if: true) } } fragment F on Item { name }", {}),
    (
        "query ($x: Boolean!) { item { ...F @include(if: $x) name } } fragment F on Item { name }",
        {"x": True},
    ),
    ("query ($x: Boolean!) { b: hello @include(if: $x) a: hello b: hello }", {"x": False}),
    ("query ($x: Boolean!) { b: hello @include(if: $x) a: hello b: hello }", {"x": True}),
    # The key order follows the first included occurrence of each response name.
    ("{ item { a: name @skip(if: true) b: name a: name } }", {}),
    ("{ __typename item { __typename ... on Item { __typename } } }", {}),
]


@pytest.mark.parametrize(("source", "variables"), DIRECTIVE_CASES)
def test_directives(
    loop: asyncio.AbstractEventLoop, source: str, variables: dict[str, Any]
) -> None:
    same(loop, support_schema.graphql_schema, source, lambda: None, variables)


def test_skip_and_include_keep_graphql_cores_key_order(loop: asyncio.AbstractEventLoop) -> None:
    source = "query ($x: Boolean!) { b: hello @include(if: $x) a: hello b: hello }"
    result = same(loop, support_schema.graphql_schema, source, lambda: None, {"x": False})
    assert list(result.data or {}) == ["a", "b"]


MUTATION_CASES = [
    "mutation { a: slowBump(by: 1) b: bump(by: 2) c: slowBump(by: 3) d: bump(by: 4) }",
    "mutation { a: bump b: fail c: slowBump d: fail(loud: true) e: bump }",
    "mutation { a: slowBump b: mustFail c: slowBump d: bump }",
    "mutation { a: bump b: mustFail c: bump }",
    'mutation { a: addPerson(name: "ann") { name greeting } b: slowBump c: bump }',
    "mutation { __typename a: bump __typename b: slowBump }",
]


@pytest.mark.parametrize("source", MUTATION_CASES)
@pytest.mark.parametrize("use_async", [False, True])
def test_mutations_run_serially(
    loop: asyncio.AbstractEventLoop, source: str, use_async: bool
) -> None:
    def context() -> Any:
        return ZooContext(
            1,
            0,
            use_async=use_async,
            schema=zoo.graphql_schema,
            root=None,
            is_awaitable=fast_is_awaitable,
        )

    same(loop, zoo.graphql_schema, source, lambda: None, make_context=context)


def test_mutation_order(loop: asyncio.AbstractEventLoop) -> None:
    """graphql-core's serial execution: each field's resolver is called in document order, and
    the awaitable results are awaited one after another, in order (so an async resolver's body
    runs after the synchronous resolvers that follow it have been called)."""
    context = ZooContext(1, 0, use_async=False)
    document = parse(MUTATION_CASES[0])
    result = settle(loop, ZOO.compiler.execute({}, document, None, None, context, None))
    assert result.data == {"a": 7, "b": 2, "c": 10, "d": 6}
    assert context.log == [
        "bump 2",
        "bump 4",
        "slow start 1",
        "slow end 1",
        "slow start 3",
        "slow end 3",
    ]


VARIABLE_CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("query ($v: Int!) { echo(value: $v) }", {"v": 3}),
    ("query ($v: Int!) { echo(value: $v) }", {}),
    ("query ($v: Int!) { echo(value: $v) }", {"v": "three"}),
    ("query ($v: Int!) { echo(value: $v) }", None),
    ("query ($v: Int = 7) { echo(value: $v) }", {}),
    ("query ($v: Int = 7) { echo(value: $v) }", {"v": None}),
    ("query ($n: String) { hello(name: $n) }", {"n": None}),
    ("query ($n: String) { hello(name: $n) }", {"n": "ann", "unused": 1}),
    ('query ($n: String = "bob") { a: hello(name: $n) b: hello }', {}),
    ("query ($s: Float) { slow(seconds: $s) }", {"s": 0}),
    ('{ echo(value: 3) hello(name: "x") }', {"ignored": True}),
]


@pytest.mark.parametrize(("source", "variables"), VARIABLE_CASES)
def test_variables(
    loop: asyncio.AbstractEventLoop, source: str, variables: dict[str, Any] | None
) -> None:
    same(loop, support_schema.graphql_schema, source, lambda: None, variables)


def test_operation_by_name(loop: asyncio.AbstractEventLoop) -> None:
    source = "query A { hello } query B { item { name } } mutation C { bump }"
    for name in ("A", "B", "C"):
        same(loop, support_schema.graphql_schema, source, lambda: None, None, name)


def test_resolvers_see_graphql_cores_info(loop: asyncio.AbstractEventLoop) -> None:
    source = """
        query Q($first: Int = 2, $p: String) {
          people(first: $first) { ...P friends(first: 1) { greeting(prefix: $p) } }
          node(id: "d1") { ... on Dog { owner { greeting } } }
        }
        fragment P on Person { a: greeting b: greeting(loud: true) }
    """

    def context() -> Any:
        return ZooContext(
            3,
            0,
            use_async=False,
            schema=zoo.graphql_schema,
            root=None,
            is_awaitable=fast_is_awaitable,
        )

    same(loop, zoo.graphql_schema, source, lambda: None, {"p": "yo"}, make_context=context)


# --- the engine -------------------------------------------------------------------------------

ENGINE_CASES: list[tuple[str, dict[str, Any] | None]] = [
    ("{ hello boom refused item { name child { name } } }", None),
    ("{ must hello }", None),
    ("query ($v: Int!) { echo(value: $v) }", {}),
    ("query ($v: Int!) { echo(value: $v) }", {"v": 4}),
    ("{ whoami }", None),
    ("mutation { a: bump(by: 2) b: bump }", None),
    ("{ slow(seconds: 0) hello }", None),
    ("{ __schema { queryType { name fields { name type { kind ofType { name } } } } } }", None),
    ('{ __type(name: "Item") { name fields { name } } }', None),
]


async def engine_body(
    engine: Engine, query: str, variables: dict[str, Any] | None, context: Any = None
) -> dict[str, Any]:
    prepared = engine.prepare(query, None)
    if inspect.isawaitable(prepared):
        prepared = await prepared
    cached, operation_type, failure = prepared
    if failure is not None:
        return failure.body
    assert cached is not None
    outcome = engine.execute(cached, operation_type, variables, None, context)
    if not isinstance(outcome, Outcome):
        outcome = await outcome
    return outcome.body


@pytest.mark.parametrize(("query", "variables"), ENGINE_CASES)
async def test_engine_answers_the_same_compiled_or_not(
    query: str, variables: dict[str, Any] | None
) -> None:
    compiled = Engine(support_schema, Settings())
    plain = Engine(support_schema, Settings(compiled_execution=False))
    assert compiled.compiler is not None and plain.compiler is None
    context = {"user": "ann"}
    for _ in range(2):
        assert await engine_body(compiled, query, variables, context) == await engine_body(
            plain, query, variables, context
        )
    cached = compiled.cache.peek(query)
    assert cached is not None and cached.plans[None] is not None  # it ran compiled


async def test_engine_middleware_applies_to_every_compiled_resolver() -> None:
    calls: list[str] = []

    def shout(next_: Any, root: Any, info: Any, **args: Any) -> Any:
        calls.append(f"{info.parent_type.name}.{info.field_name}")
        result = next_(root, info, **args)
        return result.upper() if isinstance(result, str) else result

    query = "{ hello item { name child { __typename name } } }"
    compiled = Engine(support_schema, Settings(), middleware=[shout])
    plain = Engine(support_schema, Settings(compiled_execution=False), middleware=[shout])
    body = await engine_body(compiled, query, None)
    compiled_calls, calls[:] = list(calls), []
    assert body == await engine_body(plain, query, None)
    assert compiled_calls == calls
    assert body["data"]["hello"] == "HELLO, WORLD!"
    assert "Item.__typename" in calls


async def test_subscription_events_run_compiled() -> None:
    bodies = {}
    for compiled in (True, False):
        engine = Engine(support_schema, Settings(compiled_execution=compiled))
        query = "subscription { count(upto: 3) }"
        prepared = engine.prepare(query, None)
        assert not inspect.isawaitable(prepared)
        cached, _, _ = prepared
        assert cached is not None
        stream = await engine.subscribe(cached, None, None, None)
        assert not isinstance(stream, Outcome)
        bodies[compiled] = [outcome.body async for outcome in stream]
        if compiled:
            assert cached.plans[None] is not None
    assert bodies[True] == bodies[False] == [{"data": {"count": n}} for n in range(3)]


def test_the_setting_turns_compiled_execution_off() -> None:
    assert Settings().compiled_execution is True
    settings = Settings.from_env({"COMPILED_EXECUTION": "false"})
    assert settings.compiled_execution is False
    assert Engine(support_schema, settings).compiler is None


async def test_an_operation_the_compiler_cannot_plan_runs_on_graphql_core_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    schema = build_schema("type Query { a: Int }")
    compiled = Engine(schema, Settings())
    plain = Engine(schema, Settings(compiled_execution=False))
    with caplog.at_level(logging.INFO, logger="service.engine"):
        for _ in range(3):
            body = await engine_body(compiled, "mutation { a }", None)
            assert body == await engine_body(plain, "mutation { a }", None)
    assert body["errors"][0]["message"] == "Schema is not configured to execute mutation operation."
    lines = [record for record in caplog.records if "runs on graphql-core" in record.getMessage()]
    assert len(lines) == 1, caplog.records
