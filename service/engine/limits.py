"""Static limits on a parsed document, checked before validation, whose cost they bound.

What is measured, per operation, with fragment spreads expanded (so a small document cannot hide
a large selection behind fragments):

- ``depth``: nested fields (``{ a { b } }`` is 2) -> ``QUERY_TOO_DEEP``;
- ``fields`` and ``aliases``: every field and alias, each time it is reached -> ``TOO_MANY_FIELDS``,
  ``TOO_MANY_ALIASES``.

And per document, the shapes that make graphql-core's validation slow or recursive:

- fragment spreads nested more than ``max_fragment_depth`` deep (a chain ``F0 -> F1 -> ...``;
  validation walks it recursively) -> ``QUERY_TOO_DEEP``;
- more than ``max_same_name_fields`` fields answering to one response name in one selection set,
  after expanding fragments (``OverlappingFieldsCanBeMergedRule`` compares every pair of them)
  -> ``TOO_MANY_FIELDS``;
- more than ``max_definitions`` operations and fragments -> ``TOO_MANY_DEFINITIONS``.

The walk is iterative (an explicit stack, fragments measured once each in dependency order), so
no document can exhaust Python's recursion limit here. Cycles are left to validation
(``NoFragmentCyclesRule``): a spread of a fragment that is being measured counts as empty.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from service.protocols.codes import ErrorCode


@dataclasses.dataclass(frozen=True, slots=True)
class Limits:
    """Per-document limits. ``max_depth`` counts nested fields (``{ a { b } }`` is 2)."""

    max_depth: int = 15
    max_aliases: int = 30
    max_fields: int = 500
    max_tokens: int = 20_000
    max_fragment_depth: int = 50
    max_same_name_fields: int = 64
    max_definitions: int = 500


@dataclasses.dataclass(slots=True)
class _Measure:
    depth: int = 0
    fields: int = 0
    aliases: int = 0
    #: How deep fragment spreads nest below this point (a spread of a leaf fragment is 1).
    spread_depth: int = 0


@dataclasses.dataclass(slots=True)
class _Local:
    """A selection set walked without following spreads: its own fields, and its spreads with
    the field depth at which each occurs."""

    measure: _Measure
    spreads: list[tuple[str, int]]


def _walk(selection_set: SelectionSetNode) -> _Local:
    """Measure ``selection_set`` without following fragment spreads (iteratively)."""
    measure = _Measure()
    spreads: list[tuple[str, int]] = []
    # (selection set, field depth of the fields directly in it)
    stack: list[tuple[SelectionSetNode, int]] = [(selection_set, 1)]
    while stack:
        node, depth = stack.pop()
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                measure.fields += 1
                if selection.alias is not None:
                    measure.aliases += 1
                if depth > measure.depth:
                    measure.depth = depth
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, depth + 1))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, depth))
            elif isinstance(selection, FragmentSpreadNode):
                spreads.append((selection.name.value, depth - 1))
    return _Local(measure, spreads)


def _combine(local: _Local, fragments: dict[str, _Measure]) -> _Measure:
    """``local`` with each spread replaced by its fragment's measure (missing: empty)."""
    own = local.measure
    total = _Measure(own.depth, own.fields, own.aliases, 0)
    for name, depth in local.spreads:
        sub = fragments.get(name)
        if sub is None:
            continue
        total.fields += sub.fields
        total.aliases += sub.aliases
        total.depth = max(total.depth, depth + sub.depth)
        total.spread_depth = max(total.spread_depth, 1 + sub.spread_depth)
    return total


def _measure_fragments(definitions: dict[str, FragmentDefinitionNode]) -> dict[str, _Measure]:
    """Every fragment's expanded measure, each computed once, children before parents."""
    locals_ = {name: _walk(fragment.selection_set) for name, fragment in definitions.items()}
    done: dict[str, _Measure] = {}
    visiting: set[str] = set()
    for root in definitions:
        if root in done:
            continue
        # Post-order DFS with an explicit stack: (name, index of the next spread to visit).
        stack: list[list[Any]] = [[root, 0]]
        visiting.add(root)
        while stack:
            frame = stack[-1]
            name, index = frame
            spreads = locals_[name].spreads
            if index < len(spreads):
                frame[1] = index + 1
                child = spreads[index][0]
                if child in locals_ and child not in done and child not in visiting:
                    visiting.add(child)
                    stack.append([child, 0])
                continue
            stack.pop()
            visiting.discard(name)
            # A spread into a cycle (its fragment still being visited) counts as empty.
            done[name] = _combine(locals_[name], done)
    return done


def _direct(selection_set: SelectionSetNode) -> tuple[Counter[str], set[str]]:
    """Fields per response name directly in ``selection_set`` (through inline fragments), and
    the names of the fragments spread directly in it."""
    counts: Counter[str] = Counter()
    spreads: set[str] = set()
    stack = [selection_set]
    while stack:
        node = stack.pop()
        for selection in node.selections:
            if isinstance(selection, FieldNode):
                alias = selection.alias
                counts[alias.value if alias is not None else selection.name.value] += 1
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                spreads.add(selection.name.value)
    return counts, spreads


def _fragment_names(definitions: dict[str, FragmentDefinitionNode]) -> dict[str, Counter[str]]:
    """Each fragment's response names at its top level, its spreads' included, computed once
    each, children first (a spread into a cycle counts as empty)."""
    direct = {name: _direct(fragment.selection_set) for name, fragment in definitions.items()}
    done: dict[str, Counter[str]] = {}
    visiting: set[str] = set()
    for root in definitions:
        if root in done:
            continue
        stack: list[tuple[str, list[str]]] = [(root, sorted(direct[root][1]))]
        visiting.add(root)
        while stack:
            name, pending = stack[-1]
            if pending:
                child = pending.pop()
                if child in direct and child not in done and child not in visiting:
                    visiting.add(child)
                    stack.append((child, sorted(direct[child][1])))
                continue
            stack.pop()
            visiting.discard(name)
            counts, spreads = direct[name]
            total = Counter(counts)
            for child in spreads:
                total.update(done.get(child, ()))
            done[name] = total
    return done


def _response_names(
    selection_set: SelectionSetNode, fragments: dict[str, Counter[str]]
) -> Counter[str]:
    """Fields per response name in ``selection_set``, through inline fragments and fragment
    spreads (each fragment counted once per selection set)."""
    counts, spreads = _direct(selection_set)
    for name in spreads:
        counts.update(fragments.get(name, ()))
    return counts


def _selection_sets(document: DocumentNode) -> list[SelectionSetNode]:
    """Every selection set of fields in the document (not those of inline fragments, which
    belong to the set around them)."""
    found: list[SelectionSetNode] = []
    stack: list[SelectionSetNode] = []
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            found.append(definition.selection_set)
            stack.append(definition.selection_set)
    while stack:
        node = stack.pop()
        for selection in node.selections:
            if isinstance(selection, FieldNode) and selection.selection_set is not None:
                found.append(selection.selection_set)
                stack.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
    return found


def _error(message: str, code: ErrorCode, limit: int) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code, "limit": limit}}


def check_limits(document: DocumentNode, limits: Limits) -> list[dict[str, Any]]:
    """Return formatted errors for everything over a limit (empty when all pass).

    Codes: ``QUERY_TOO_DEEP``, ``TOO_MANY_ALIASES``, ``TOO_MANY_FIELDS``,
    ``TOO_MANY_DEFINITIONS``; each error carries ``extensions.limit``.
    """
    definitions = document.definitions
    if len(definitions) > limits.max_definitions:
        return [
            _error(
                f"The document has {len(definitions)} operations and fragments; the maximum is "
                f"{limits.max_definitions}.",
                ErrorCode.TOO_MANY_DEFINITIONS,
                limits.max_definitions,
            )
        ]
    fragments = {d.name.value: d for d in definitions if isinstance(d, FragmentDefinitionNode)}
    measures = _measure_fragments(fragments)
    deepest = max((m.spread_depth for m in measures.values()), default=0)
    if deepest > limits.max_fragment_depth:
        return [
            _error(
                f"Fragment spreads nest {deepest} deep; the maximum is "
                f"{limits.max_fragment_depth}.",
                ErrorCode.QUERY_TOO_DEEP,
                limits.max_fragment_depth,
            )
        ]
    errors: list[dict[str, Any]] = []
    for definition in definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        m = _combine(_walk(definition.selection_set), measures)
        label = f"operation '{definition.name.value}'" if definition.name else "the operation"
        if m.depth > limits.max_depth:
            errors.append(
                _error(
                    f"Query depth {m.depth} of {label} exceeds the maximum depth "
                    f"{limits.max_depth}.",
                    ErrorCode.QUERY_TOO_DEEP,
                    limits.max_depth,
                )
            )
        if m.aliases > limits.max_aliases:
            errors.append(
                _error(
                    f"{m.aliases} aliases in {label} exceed the maximum {limits.max_aliases}.",
                    ErrorCode.TOO_MANY_ALIASES,
                    limits.max_aliases,
                )
            )
        if m.fields > limits.max_fields:
            errors.append(
                _error(
                    f"{m.fields} fields in {label} exceed the maximum {limits.max_fields}.",
                    ErrorCode.TOO_MANY_FIELDS,
                    limits.max_fields,
                )
            )
    if errors:
        return errors
    names = _fragment_names(fragments)
    for selection_set in _selection_sets(document):
        counts = _response_names(selection_set, names)
        if not counts:
            continue
        name, count = counts.most_common(1)[0]
        if count > limits.max_same_name_fields:
            return [
                _error(
                    f"{count} fields answer to the name '{name}' in one selection set; the "
                    f"maximum is {limits.max_same_name_fields} (use aliases).",
                    ErrorCode.TOO_MANY_FIELDS,
                    limits.max_same_name_fields,
                )
            ]
    return errors
