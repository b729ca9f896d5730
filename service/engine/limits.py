"""Static limits on a parsed document: depth, aliases and fields.

The checks run once per distinct document (before validation, whose cost they bound) and expand
fragment spreads, so a small document cannot hide a large selection behind fragments. Cycles are
left to validation (``NoFragmentCyclesRule``); here a spread already being measured counts as
empty.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(slots=True)
class _Measure:
    depth: int = 0
    fields: int = 0
    aliases: int = 0


def _measure(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    memo: dict[str, _Measure],
    visiting: set[str],
) -> _Measure:
    result = _Measure()
    if selection_set is None:
        return result
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            sub = _measure(selection.selection_set, fragments, memo, visiting)
            result.depth = max(result.depth, 1 + sub.depth)
            result.fields += 1 + sub.fields
            result.aliases += (1 if selection.alias else 0) + sub.aliases
        elif isinstance(selection, InlineFragmentNode):
            sub = _measure(selection.selection_set, fragments, memo, visiting)
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
                cached = _measure(fragment.selection_set, fragments, memo, visiting)
                visiting.discard(name)
                memo[name] = cached
            result.depth = max(result.depth, cached.depth)
            result.fields += cached.fields
            result.aliases += cached.aliases
    return result


def check_limits(document: DocumentNode, limits: Limits) -> list[dict[str, Any]]:
    """Return formatted errors for every operation over a limit (empty when all pass).

    Codes: ``QUERY_TOO_DEEP``, ``TOO_MANY_ALIASES``, ``TOO_MANY_FIELDS``.
    """
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    memo: dict[str, _Measure] = {}
    errors: list[dict[str, Any]] = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        m = _measure(definition.selection_set, fragments, memo, set())
        label = f"operation '{definition.name.value}'" if definition.name else "the operation"
        if m.depth > limits.max_depth:
            errors.append(
                {
                    "message": f"Query depth {m.depth} of {label} exceeds the maximum depth "
                    f"{limits.max_depth}.",
                    "extensions": {"code": ErrorCode.QUERY_TOO_DEEP, "limit": limits.max_depth},
                }
            )
        if m.aliases > limits.max_aliases:
            errors.append(
                {
                    "message": f"{m.aliases} aliases in {label} exceed the maximum "
                    f"{limits.max_aliases}.",
                    "extensions": {"code": ErrorCode.TOO_MANY_ALIASES, "limit": limits.max_aliases},
                }
            )
        if m.fields > limits.max_fields:
            errors.append(
                {
                    "message": f"{m.fields} fields in {label} exceed the maximum "
                    f"{limits.max_fields}.",
                    "extensions": {"code": ErrorCode.TOO_MANY_FIELDS, "limit": limits.max_fields},
                }
            )
    return errors
