"""The limits walk: iterative, identical to the recursive reference it replaced, and it refuses the
shapes that made validation slow or recursive (issue: a chain of 1,000 fragments returned 500; 499
same-name fields cost 0.85 s of validation).

The reference below is the recursive measure the service used before (it overflows Python's stack
on long fragment chains, which is why it was replaced); on documents it can handle, the two must
agree exactly, over generated documents.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.engine.limits import Limits, _combine, _measure_fragments, _walk, check_limits
from service.engine.recorder import NullRecorder
from service.settings import Settings
from support.schemas import schema


@dataclasses.dataclass
class Ref:
    depth: int = 0
    fields: int = 0
    aliases: int = 0


def reference(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    memo: dict[str, Ref],
    visiting: set[str],
) -> Ref:
    """The recursive measure the service used before (kept here as the oracle)."""
    result = Ref()
    if selection_set is None:
        return result
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            sub = reference(selection.selection_set, fragments, memo, visiting)
            result.depth = max(result.depth, 1 + sub.depth)
            result.fields += 1 + sub.fields
            result.aliases += (1 if selection.alias else 0) + sub.aliases
        elif isinstance(selection, InlineFragmentNode):
            sub = reference(selection.selection_set, fragments, memo, visiting)
            result.depth = max(result.depth, sub.depth)
            result.fields += sub.fields
            result.aliases += sub.aliases
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            cached = memo.get(name)
            if cached is None:
                fragment = fragments.get(name)
                if fragment is None or name in visiting:
                    continue
                visiting.add(name)
                cached = reference(fragment.selection_set, fragments, memo, visiting)
                visiting.discard(name)
                memo[name] = cached
            result.depth = max(result.depth, cached.depth)
            result.fields += cached.fields
            result.aliases += cached.aliases
    return result


# --- generated documents: operations and an acyclic web of fragments ----------------------------


@st.composite
def documents(draw: st.DrawFn) -> str:
    n_fragments = draw(st.integers(0, 6))
    counter = iter(range(10_000))

    def selection(depth: int, fragment_index: int | None) -> str:
        """A selection set; fragment k may spread only fragments with a larger index."""
        parts = []
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["field", "field", "alias", "inline", "spread"]))
            later = range((fragment_index + 1) if fragment_index is not None else 0, n_fragments)
            if kind == "spread" and later:
                parts.append(f"...F{draw(st.sampled_from(list(later)))}")
            elif kind == "inline" and depth < 4:
                parts.append(f"... on Query {{ {selection(depth + 1, fragment_index)} }}")
            else:
                name = f"f{next(counter) % 3}"
                alias = f"a{next(counter)}: " if kind == "alias" else ""
                sub = (
                    f" {{ {selection(depth + 1, fragment_index)} }}"
                    if depth < 4 and draw(st.booleans())
                    else ""
                )
                parts.append(f"{alias}{name}{sub}")
        return " ".join(parts)

    operations = [f"query Q{i} {{ {selection(0, None)} }}" for i in range(draw(st.integers(1, 3)))]
    fragments = [f"fragment F{k} on Query {{ {selection(0, k)} }}" for k in range(n_fragments)]
    return " ".join(operations + fragments)


@settings(max_examples=500, deadline=None)
@given(documents())
def test_iterative_measure_equals_the_recursive_reference(text: str) -> None:
    document = parse(text)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    measures = _measure_fragments(fragments)
    memo: dict[str, Ref] = {}
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            new = _combine(_walk(definition.selection_set), measures)
            old = reference(definition.selection_set, fragments, memo, set())
            assert (new.depth, new.fields, new.aliases) == (old.depth, old.fields, old.aliases)


# --- the shapes that used to hurt ------------------------------------------------------------


def chain(n: int) -> str:
    links = " ".join(f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n))
    return f"{{ ...F0 }} {links} fragment F{n} on Query {{ hello }}"


def same_name(n: int) -> str:
    return "{ " + " ".join(f'hello(name: "{i}")' for i in range(n)) + " }"


def test_a_fragment_chain_is_measured_without_recursion() -> None:
    limits = Limits(max_definitions=100_000, max_fragment_depth=100_000)
    assert check_limits(parse(chain(3000), max_tokens=None), limits) == []


def test_a_long_fragment_chain_is_refused_by_name() -> None:
    errors = check_limits(parse(chain(1000)), Limits(max_definitions=2000))
    assert [e["extensions"]["code"] for e in errors] == ["QUERY_TOO_DEEP"]
    assert "Fragment spreads nest 1000 deep" in errors[0]["message"]


def test_too_many_definitions_are_refused_by_name() -> None:
    errors = check_limits(parse(chain(600)), Limits())
    assert [e["extensions"]["code"] for e in errors] == ["TOO_MANY_DEFINITIONS"]


def test_same_name_fields_are_refused_before_validation() -> None:
    errors = check_limits(parse(same_name(499)), Limits())
    assert [e["extensions"]["code"] for e in errors] == ["TOO_MANY_FIELDS"]
    assert "499 fields answer to the name 'hello'" in errors[0]["message"]
    assert check_limits(parse(same_name(64)), Limits()) == []


def test_same_name_fields_count_through_fragments() -> None:
    spreads = " ".join(f"...F{i}" for i in range(150))
    fragments = " ".join(f'fragment F{i} on Query {{ hello(name: "{i}") }}' for i in range(150))
    errors = check_limits(parse(f"{{ {spreads} }} {fragments}"), Limits())
    assert [e["extensions"]["code"] for e in errors] == ["TOO_MANY_FIELDS"]


class Lookups(NullRecorder):
    __slots__ = ("hits", "misses")

    def __init__(self) -> None:
        self.hits = self.misses = 0

    def cache_lookup(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1


async def post(core: HTTPCore, query: str) -> tuple[int, dict[str, Any]]:
    import json

    body = json.dumps({"query": query}).encode()
    headers = {"content-type": "application/json"}
    request = HTTPRequest("POST", "/graphql", "", headers, body, "test")
    request.request_id = RequestIds().for_headers(headers)
    result: Any = core.handle(request)
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result.status, json.loads(result.body)


async def test_hostile_documents_get_named_errors_and_cached_verdicts() -> None:
    """Over the HTTP core: a named error, never a 500, and the verdict comes from the cache the
    second time (large documents are prepared off the event loop)."""
    recorder = Lookups()
    core = HTTPCore(Engine(schema, Settings(), recorder=recorder))
    for query, code in [(chain(1000), "TOO_MANY_DEFINITIONS"), (same_name(499), "TOO_MANY_FIELDS")]:
        for _attempt in range(2):
            status, body = await post(core, query)
            assert status == 200, body
            assert body["errors"][0]["extensions"]["code"] == code
    assert recorder.misses == 2 and recorder.hits == 2
    status, body = await post(core, chain(40))
    assert status == 200 and body == {"data": {"hello": "Hello, world!"}}
