"""Compiled execution: run a cached document's operation with graphql-core's results, without
graphql-core's per-field machinery.

graphql-core's ``execute`` works out, for every field of every object of every request, what the
document and the schema already decided: which fields an object gets (``collect_fields``), the
field definition, the resolver, the argument values, how to complete the value (by walking the
return type), and it builds a ``Path`` and a ``GraphQLResolveInfo`` per field. Here that work is
done once per (document, operation, values of the ``@skip``/``@include`` variables) and kept as
plans; a request then only reads values and fills dictionaries.

What a plan holds, per field of an object type (``_Field``):

- how to get the value: graphene's default resolver (``dict_or_attr_resolver`` and friends,
  recognised by identity on the ``functools.partial`` graphene puts on the field) and
  graphql-core's ``default_field_resolver`` (the field has no resolver) become a direct key or
  attribute read when the arguments do not depend on variables; ``__typename`` is a constant;
  anything else is a call of the field's resolver with a ``GraphQLResolveInfo`` built from a
  precomputed head, the field's ``Path`` and the request's tail;
- the arguments, computed once when they use no variables (and hold only immutable values),
  else by ``get_argument_values`` per call as graphql-core does;
- how to complete the value, chosen once from the return type: non-null, list, leaf (with a
  shortcut for ``str``/``bool`` values of String/ID/Boolean, whose serializers return them as
  they are), object (``is_type_of``), abstract (``resolve_type`` or ``default_type_resolver``).
  The sub-selections of an object are planned on first use, once per runtime type.

Semantics follow graphql-core 3.2's ``ExecutionContext`` step by step: the same checks in the same
order, the same error messages, ``located_error`` with the same nodes and paths, null propagation
to the nearest nullable parent, errors dropped under an already nulled position and sorted as
``build_response`` sorts them, awaitables gathered as ``execute_fields`` and
``complete_list_value`` gather them (``asyncio.gather``), and mutations' top-level fields run as
``execute_fields_serially`` runs them. Middleware wraps every resolver through one
``MiddlewareManager`` (so no field is read directly when there is middleware), as graphql-core
wraps them.

A ``@skip``/``@include`` variable that is null or missing is planned as it is: planning the
selection that holds it raises graphql-core's error, at the place graphql-core raises it.

What falls back to graphql-core's ``execute`` (never wrong, only slower):
``CompiledOperation.execute`` returns ``None`` for a request whose variables are not a dictionary
(graphql-core raises its ``TypeError``) or that would need a seventeenth combination of
``@skip``/``@include`` variable values for one operation (``MAX_VARIANTS``); ``Compiler`` answers
``None`` for an operation it cannot plan at all (the schema has no root type for it, a selection
nested too deeply for Python's recursion, an output type it does not know). Both are logged once
per document and operation (logger ``service.engine``).

One assumption beyond graphql-core: whether a value is awaitable depends only on its type (for
anything but generators), so types once seen not awaitable are remembered.
"""

from __future__ import annotations

import logging
import sys
from asyncio import gather
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from enum import Enum
from functools import partial
from types import CoroutineType, GeneratorType
from typing import Any

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLAbstractType,
    GraphQLBoolean,
    GraphQLError,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLIncludeDirective,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLSkipDirective,
    GraphQLString,
    InlineFragmentNode,
    ListValueNode,
    MiddlewareManager,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SchemaMetaFieldDef,
    SelectionSetNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    Undefined,
    ValueNode,
    VariableNode,
    default_field_resolver,
    default_type_resolver,
    get_argument_values,
    get_directive_values,
    get_variable_values,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
    type_from_ast,
)
from graphql.pyutils import Path, inspect, is_iterable
from graphql.pyutils import is_awaitable as core_is_awaitable

log = logging.getLogger("service.engine")

#: Distinct ``@skip``/``@include`` variable combinations planned per operation; a request with
#: yet another combination runs on graphql-core.
MAX_VARIANTS = 16

#: What ``max_coercion_errors`` graphql-core's ``execute`` uses by default.
MAX_COERCION_ERRORS = 50

_tuple_new = tuple.__new__

# How a field gets its value (``_Field.kind``).
_CALL = 0  # call the resolver with info and arguments
_TYPENAME = 1  # __typename: the parent type's name
_GRAPHENE = 2  # graphene's dict_or_attr_resolver: root.get(name, default) or getattr
_ATTR = 3  # graphene's attr_resolver: getattr(root, name, default)
_DICT = 4  # graphene's dict_resolver: root.get(name, default)
_CORE = 5  # graphql-core's default_field_resolver: Mapping.get or getattr, called if callable

# The builtin scalars whose serializer returns a value of this exact type unchanged...
_IDENTITY_SERIALIZED: tuple[tuple[Any, tuple[type, Callable[[Any], Any]]], ...] = (
    (GraphQLString, (str, GraphQLString.serialize)),
    (GraphQLID, (str, GraphQLID.serialize)),
    (GraphQLBoolean, (bool, GraphQLBoolean.serialize)),
)
# ... and those whose serializer only checks a value of this exact type (never returns None).
_CHECKED_SERIALIZED: tuple[tuple[Any, tuple[type, Callable[[Any], Any]]], ...] = (
    (GraphQLInt, (int, GraphQLInt.serialize)),
    (GraphQLFloat, (float, GraphQLFloat.serialize)),
)

_IMMUTABLE = (str, int, float, bool, type(None), Enum)

_MISSING: Any = object()  # a variable without a value


class _Unsupported(Exception):
    """The compiler does not handle this operation: graphql-core runs it."""


def awaitable_check(predicate: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """``predicate`` with a memory of the types it found not awaitable (generators excepted:
    whether one is awaitable depends on its code flags)."""
    plain: set[type] = {str, int, float, bool, type(None), dict, list, tuple, bytes}

    def is_awaitable(value: Any) -> bool:
        kind = type(value)
        if kind in plain:
            return False
        if predicate(value):
            return True
        if kind is not GeneratorType and len(plain) < 4096:
            plain.add(kind)
        return False

    return is_awaitable


def _graphene_readers() -> dict[Any, int]:
    """graphene's default resolver functions (by identity) and the read each one does. graphene
    is not imported here: a graphene schema has imported it already."""
    module = sys.modules.get("graphene.types.resolver")
    if module is None:
        return {}
    readers = {}
    for name, kind in (
        ("dict_or_attr_resolver", _GRAPHENE),
        ("attr_resolver", _ATTR),
        ("dict_resolver", _DICT),
    ):
        function = getattr(module, name, None)
        if function is not None:
            readers[function] = kind
    return readers


def _uses_variables(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_uses_variables(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_uses_variables(field.value) for field in value.fields)
    return False


def _condition_variables(
    operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> tuple[str, ...]:
    """Names of the variables that ``@skip``/``@include`` conditions use, in document order."""
    names: dict[str, None] = {}
    pending: list[SelectionSetNode] = [operation.selection_set]
    pending.extend(fragment.selection_set for fragment in reversed(fragments.values()))
    while pending:
        selection_set = pending.pop()
        for selection in selection_set.selections:
            for directive in selection.directives or ():
                if directive.name.value not in ("skip", "include"):
                    continue
                for argument in directive.arguments or ():
                    if isinstance(argument.value, VariableNode):
                        names[argument.value.name.value] = None
            inner = getattr(selection, "selection_set", None)
            if inner is not None:
                pending.append(inner)
    return tuple(names)


def _field_def(
    schema: GraphQLSchema, parent_type: GraphQLObjectType, name: str
) -> GraphQLField | None:
    """graphql-core's ``get_field_def``: the meta fields, else the type's own field."""
    if name == "__schema" and schema.query_type == parent_type:
        return SchemaMetaFieldDef
    if name == "__type" and schema.query_type == parent_type:
        return TypeMetaFieldDef
    if name == "__typename":
        return TypeNameMetaFieldDef
    return parent_type.fields.get(name)


class _Run:
    """One request's state: the errors, the info tail, the variables."""

    __slots__ = ("errors", "info_tail", "is_awaitable", "positions", "variables")

    def __init__(
        self,
        info_tail: tuple[Any, ...],
        variables: dict[str, Any],
        is_awaitable: Callable[[Any], bool],
    ) -> None:
        self.errors: list[GraphQLError] = []
        self.positions: set[Path | None] = set()
        self.info_tail = info_tail
        self.variables = variables
        self.is_awaitable = is_awaitable

    def add_error(self, error: GraphQLError, path: Path | None) -> None:
        """Keep ``error`` unless its position or an ancestor's was already nulled by an error
        (graphql-core's ``CollectedErrors``)."""
        positions = self.positions
        position = path
        while position is not None:
            if position in positions:
                return
            position = position.prev
        if None in positions:
            return
        positions.add(path)
        self.errors.append(error)

    def response(self, data: dict[str, Any] | None) -> ExecutionResult:
        errors = self.errors
        if not errors:
            return ExecutionResult(data, None)
        errors.sort(key=lambda error: (error.locations or [], error.path or [], error.message))
        return ExecutionResult(data, errors)


Completer = Callable[[_Run, Path, Path | None, Any], Any]


class _ObjectPlan:
    """The fields of one object type for one group of field nodes, in response order."""

    __slots__ = ("fields", "typename")

    def __init__(self, typename: str, fields: tuple[_Field, ...]) -> None:
        self.typename = typename
        self.fields = fields


class _Field:
    """One response key of an object type: how to resolve and complete it."""

    __slots__ = (
        "args",
        "attname",
        "complete",
        "default",
        "fast",
        "fast_checked",
        "field_def",
        "info_head",
        "key",
        "kind",
        "name",
        "node",
        "nodes",
        "nullable",
        "resolver",
        "serialize",
        "typename",
    )

    key: str
    kind: int
    name: str  # the field's name in the schema
    attname: str  # what a direct read reads
    default: Any
    nodes: list[FieldNode]
    node: FieldNode
    field_def: GraphQLField
    resolver: Callable[..., Any]
    args: dict[str, Any] | None  # None: computed per call
    nullable: bool
    fast: type | None
    fast_checked: type | None
    serialize: Callable[[Any], Any] | None
    typename: str
    info_head: tuple[Any, ...]
    complete: Completer

    def info(self, run: _Run, path: Path) -> GraphQLResolveInfo:
        return _tuple_new(GraphQLResolveInfo, (*self.info_head, path, *run.info_tail))

    def arguments(self, run: _Run) -> dict[str, Any]:
        args = self.args
        if args is None:
            return get_argument_values(self.field_def, self.node, run.variables)
        return args

    def call(self, run: _Run, source: Any, parent: Path | None) -> Any:
        """graphql-core's ``execute_field`` up to the error handling (the caller's)."""
        path = _tuple_new(Path, (parent, self.key, self.typename))
        info = _tuple_new(GraphQLResolveInfo, (*self.info_head, path, *run.info_tail))
        args = self.args
        if args is None:
            args = get_argument_values(self.field_def, self.node, run.variables)
        result = self.resolver(source, info, **args) if args else self.resolver(source, info)
        if type(result) is self.fast:
            return result
        is_awaitable = run.is_awaitable
        if is_awaitable(result):
            return _await_result(run, self.complete, path, path, result, self.nodes, self.nullable)
        completed = self.complete(run, path, path, result)
        if is_awaitable(completed):
            return _await_completed(run, path, completed, self.nodes, self.nullable)
        return completed

    def resolved(self, run: _Run, parent: Path | None, value: Any) -> Any:
        """The rest of ``execute_field`` once a default resolver's value was read."""
        path = _tuple_new(Path, (parent, self.key, self.typename))
        is_awaitable = run.is_awaitable
        if is_awaitable(value):
            return _await_result(run, self.complete, path, path, value, self.nodes, self.nullable)
        completed = self.complete(run, path, path, value)
        if is_awaitable(completed):
            return _await_completed(run, path, completed, self.nodes, self.nullable)
        return completed

    def read_core(self, run: _Run, source: Any, parent: Path | None) -> Any:
        """graphql-core's ``default_field_resolver``."""
        name = self.attname
        value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
        if callable(value):
            path = _tuple_new(Path, (parent, self.key, self.typename))
            info = _tuple_new(GraphQLResolveInfo, (*self.info_head, path, *run.info_tail))
            return value(info, **self.arguments(run))
        return value

    def fail(self, run: _Run, parent: Path | None, raw: Exception) -> None:
        """graphql-core's ``handle_field_error`` for an error raised by this field."""
        path = _tuple_new(Path, (parent, self.key, self.typename))
        error = located_error(raw, self.nodes, path.as_list())
        if not self.nullable:
            raise error
        run.add_error(error, path)


async def _await_result(
    run: _Run,
    complete: Completer,
    field_path: Path,
    path: Path,
    pending: Awaitable[Any],
    nodes: list[FieldNode],
    nullable: bool,
) -> Any:
    """Await a resolver's (or a list item's) awaitable, then complete it; errors are located at
    ``path``."""
    try:
        completed = complete(run, field_path, path, await pending)
        if run.is_awaitable(completed):
            return await completed
        return completed
    except Exception as raw:
        error = located_error(raw, nodes, path.as_list())
        if not nullable:
            raise error from None
        run.add_error(error, path)
        return None


async def _await_completed(
    run: _Run, path: Path, completed: Awaitable[Any], nodes: list[FieldNode], nullable: bool
) -> Any:
    """Await a completion that went asynchronous; errors are located at ``path``."""
    try:
        return await completed
    except Exception as raw:
        error = located_error(raw, nodes, path.as_list())
        if not nullable:
            raise error from None
        run.add_error(error, path)
        return None


def _execute_fields(run: _Run, plan: _ObjectPlan, source: Any, path: Path | None) -> Any:
    """graphql-core's ``execute_fields``: every field of ``source``; a dict, or an awaitable of
    one when some field went asynchronous (awaited together, as ``asyncio.gather`` does)."""
    results: dict[str, Any] = {}
    pending: list[str] | None = None
    is_dict = isinstance(source, dict)
    for field in plan.fields:
        key = field.key
        try:
            kind = field.kind
            if kind == _CALL:
                result = field.call(run, source, path)
            elif kind == _TYPENAME:
                results[key] = field.default
                continue
            else:
                if kind == _GRAPHENE:
                    if is_dict:
                        value = source.get(field.attname, field.default)
                    else:
                        value = getattr(source, field.attname, field.default)
                elif kind == _ATTR:
                    value = getattr(source, field.attname, field.default)
                elif kind == _DICT:
                    value = source.get(field.attname, field.default)
                else:
                    value = field.read_core(run, source, path)
                value_type = type(value)
                if value_type is field.fast:
                    results[key] = value
                    continue
                if value_type is field.fast_checked:
                    results[key] = field.serialize(value)  # type: ignore[misc]
                    continue
                if value is None and field.nullable:
                    results[key] = None
                    continue
                result = field.resolved(run, path, value)
        except Exception as raw:
            field.fail(run, path, raw)
            result = None
        results[key] = result
        # Only our own coroutines: ``call``, ``resolved`` and ``fail`` wrap any other awaitable.
        if type(result) is CoroutineType:
            if pending is None:
                pending = [key]
            else:
                pending.append(key)
    if pending is None:
        return results
    return _gather_fields(results, pending)


async def _gather_fields(results: dict[str, Any], pending: list[str]) -> dict[str, Any]:
    results.update(zip(pending, await gather(*(results[key] for key in pending)), strict=True))
    return results


def _execute_field(run: _Run, field: _Field, source: Any, path: Path | None) -> Any:
    """One field as ``execute_field`` runs it (for serial execution)."""
    try:
        kind = field.kind
        if kind == _CALL:
            return field.call(run, source, path)
        if kind == _TYPENAME:
            return field.default
        if kind == _GRAPHENE:
            if isinstance(source, dict):
                value = source.get(field.attname, field.default)
            else:
                value = getattr(source, field.attname, field.default)
        elif kind == _ATTR:
            value = getattr(source, field.attname, field.default)
        elif kind == _DICT:
            value = source.get(field.attname, field.default)
        else:
            value = field.read_core(run, source, path)
        return field.resolved(run, path, value)
    except Exception as raw:
        field.fail(run, path, raw)
        return None


def _execute_fields_serially(run: _Run, plan: _ObjectPlan, source: Any, path: Path | None) -> Any:
    """graphql-core's ``execute_fields_serially`` (mutations): each field is started after the
    previous one's result, when that is awaitable, is awaited, exactly as graphql-core chains
    them."""
    results: Any = {}
    is_awaitable = run.is_awaitable
    for field in plan.fields:
        result = _execute_field(run, field, source, path)
        if is_awaitable(results):
            results = _then_set(results, field.key, result, is_awaitable)
        elif is_awaitable(result):
            results = _set_awaited(results, field.key, result)
        else:
            results[field.key] = result
    return results


async def _then_set(
    results: Awaitable[dict[str, Any]], key: str, result: Any, is_awaitable: Callable[[Any], bool]
) -> dict[str, Any]:
    awaited = await results
    awaited[key] = await result if is_awaitable(result) else result
    return awaited


async def _set_awaited(results: dict[str, Any], key: str, result: Awaitable[Any]) -> dict[str, Any]:
    results[key] = await result
    return results


# --- completion ------------------------------------------------------------------------------


def _non_null_completer(inner: Completer, message: str) -> Completer:
    def complete_non_null(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        completed = inner(run, field_path, path, value)
        if completed is None:
            raise TypeError(message)
        return completed

    return complete_non_null


def _leaf_completer(return_type: Any) -> Completer:
    serialize = return_type.serialize

    def complete_leaf(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise value
        serialized = serialize(value)
        if serialized is None or serialized is Undefined:
            raise TypeError(
                f"Expected `{inspect(return_type)}.serialize({inspect(value)})`"
                f" to return non-nullable value, returned: {inspect(serialized)}"
            )
        return serialized

    return complete_leaf


def _fast_types(return_type: GraphQLOutputType) -> tuple[type | None, type | None, Any]:
    """``(fast, fast_checked, serialize)`` for a (possibly non-null) builtin scalar type."""
    named: Any = return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    for scalar, (kind, serialize) in _IDENTITY_SERIALIZED:
        if named is scalar and scalar.serialize is serialize:
            return kind, None, None
    for scalar, (kind, serialize) in _CHECKED_SERIALIZED:
        if named is scalar and scalar.serialize is serialize:
            return None, kind, serialize
    return None, None, None


def _list_completer(variant: _Variant, list_type: GraphQLList[Any], field: _Field) -> Completer:
    item_type = list_type.of_type
    complete_item = variant.completer(item_type, field)
    item_nullable = not is_non_null_type(item_type)
    fast, _, _ = _fast_types(item_type)
    item_is_leaf = is_leaf_type(item_type.of_type if item_nullable is False else item_type)
    nodes = field.nodes
    not_iterable = (
        f"Expected Iterable, but did not find one for field '{field.typename}.{field.name}'."
    )

    def complete_list(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise value
        if type(value) is not list and not is_iterable(value):
            if isinstance(value, AsyncIterable):
                return _async_iterable_to_list(complete_list, run, field_path, path, value)
            raise GraphQLError(not_iterable)
        is_awaitable = run.is_awaitable
        completed_results: list[Any] = []
        append = completed_results.append
        pending: list[int] | None = None
        for index, item in enumerate(value):
            if type(item) is fast:
                append(item)
                continue
            item_path = None
            try:
                if is_awaitable(item):
                    item_path = _tuple_new(Path, (path, index, None))
                    completed = _await_result(
                        run, complete_item, field_path, item_path, item, nodes, item_nullable
                    )
                    awaitable = True
                else:
                    if not item_is_leaf:
                        item_path = _tuple_new(Path, (path, index, None))
                    completed = complete_item(run, field_path, item_path, item)
                    awaitable = is_awaitable(completed)
                    if awaitable:
                        if item_path is None:
                            item_path = _tuple_new(Path, (path, index, None))
                        completed = _await_completed(
                            run, item_path, completed, nodes, item_nullable
                        )
            except Exception as raw:
                if item_path is None:
                    item_path = _tuple_new(Path, (path, index, None))
                error = located_error(raw, nodes, item_path.as_list())
                if not item_nullable:
                    raise error from None
                run.add_error(error, item_path)
                completed = None
                awaitable = False
            if awaitable:
                if pending is None:
                    pending = [index]
                else:
                    pending.append(index)
            append(completed)
        if pending is None:
            return completed_results
        return _gather_items(completed_results, pending)

    return complete_list


async def _async_iterable_to_list(
    complete_list: Completer, run: _Run, field_path: Path, path: Path | None, value: Any
) -> Any:
    items = [item async for item in value]
    return complete_list(run, field_path, path, items)


async def _gather_items(completed_results: list[Any], pending: list[int]) -> list[Any]:
    for index, result in zip(
        pending, await gather(*(completed_results[index] for index in pending)), strict=True
    ):
        completed_results[index] = result
    return completed_results


def _object_value(variant: _Variant, object_type: GraphQLObjectType, field: _Field) -> Completer:
    """graphql-core's ``complete_object_value`` for ``object_type`` (the value is neither null
    nor an exception): ``is_type_of``, then the sub-selection."""
    plans: list[_ObjectPlan] = []
    is_type_of = object_type.is_type_of
    nodes = field.nodes

    def object_value(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if plans:
            plan = plans[0]
        else:
            plan = variant.object_plan(object_type, nodes)
            plans.append(plan)
        if is_type_of:
            verdict: Any = is_type_of(value, field.info(run, field_path))
            if run.is_awaitable(verdict):
                return _checked_then_execute(run, plan, object_type, verdict, value, path, nodes)
            if not verdict:
                raise _invalid_return_type(object_type, value, nodes)
        return _execute_fields(run, plan, value, path)

    return object_value


def _invalid_return_type(
    object_type: GraphQLObjectType, value: Any, nodes: list[FieldNode]
) -> GraphQLError:
    return GraphQLError(
        f"Expected value of type '{object_type.name}' but got: {inspect(value)}.", nodes
    )


async def _checked_then_execute(
    run: _Run,
    plan: _ObjectPlan,
    object_type: GraphQLObjectType,
    verdict: Awaitable[Any],
    value: Any,
    path: Path | None,
    nodes: list[FieldNode],
) -> Any:
    if not await verdict:
        raise _invalid_return_type(object_type, value, nodes)
    # As graphql-core does: the sub-selection's result is returned as it is (not awaited here).
    return _execute_fields(run, plan, value, path)


def _object_completer(
    variant: _Variant, object_type: GraphQLObjectType, field: _Field, null_message: str | None
) -> Completer:
    """``complete_value`` for an object type, non-null when ``null_message`` is set."""
    object_value = _object_value(variant, object_type, field)

    def complete_object(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if value is None or value is Undefined:
            if null_message is not None:
                raise TypeError(null_message)
            return None
        if isinstance(value, Exception):
            raise value
        return object_value(run, field_path, path, value)

    return complete_object


def _object_list_completer(
    variant: _Variant, list_type: GraphQLList[Any], field: _Field, complete_item: Completer
) -> Completer:
    """``complete_list_value`` for a list of objects without ``is_type_of`` (the common list):
    the item completion is inlined."""
    item_type = list_type.of_type
    item_nullable = not is_non_null_type(item_type)
    object_type = item_type if item_nullable else item_type.of_type
    nodes = field.nodes
    plans: list[_ObjectPlan] = []
    null_message = f"Cannot return null for non-nullable field {field.typename}.{field.name}."
    not_iterable = (
        f"Expected Iterable, but did not find one for field '{field.typename}.{field.name}'."
    )

    def complete_object_list(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise value
        if type(value) is not list and not is_iterable(value):
            if isinstance(value, AsyncIterable):
                return _async_iterable_to_list(complete_object_list, run, field_path, path, value)
            raise GraphQLError(not_iterable)
        # Planned when the first item needs it, where graphql-core collects the sub-fields (a
        # null @skip/@include variable in them is an error of that item).
        plan = plans[0] if plans else None
        is_awaitable = run.is_awaitable
        completed_results: list[Any] = []
        append = completed_results.append
        pending: list[int] | None = None
        for index, item in enumerate(value):
            item_path = _tuple_new(Path, (path, index, None))
            try:
                if is_awaitable(item):
                    completed = _await_result(
                        run, complete_item, field_path, item_path, item, nodes, item_nullable
                    )
                else:
                    if item is None or item is Undefined:
                        if not item_nullable:
                            raise TypeError(null_message)
                        append(None)
                        continue
                    if isinstance(item, Exception):
                        raise item
                    if plan is None:
                        plan = variant.object_plan(object_type, nodes)
                        plans.append(plan)
                    completed = _execute_fields(run, plan, item, item_path)
                    if type(completed) is CoroutineType:
                        completed = _await_completed(
                            run, item_path, completed, nodes, item_nullable
                        )
                    else:
                        append(completed)
                        continue
            except Exception as raw:
                error = located_error(raw, nodes, item_path.as_list())
                if not item_nullable:
                    raise error from None
                run.add_error(error, item_path)
                append(None)
                continue
            if pending is None:
                pending = [index]
            else:
                pending.append(index)
            append(completed)
        if pending is None:
            return completed_results
        return _gather_items(completed_results, pending)

    return complete_object_list


def _abstract_completer(
    variant: _Variant, abstract_type: GraphQLAbstractType, field: _Field
) -> Completer:
    resolve_type = abstract_type.resolve_type or default_type_resolver
    by_name: dict[str, Completer] = {}
    schema = variant.schema
    nodes = field.nodes
    parent_name, field_name = field.typename, field.name

    def runtime_completer(runtime_type_name: Any, value: Any) -> Completer:
        """graphql-core's ``ensure_valid_runtime_type``, then the object completion."""
        if type(runtime_type_name) is str:
            known = by_name.get(runtime_type_name)
            if known is not None:
                return known
        if runtime_type_name is None:
            raise GraphQLError(
                f"Abstract type '{abstract_type.name}' must resolve"
                " to an Object type at runtime"
                f" for field '{parent_name}.{field_name}'."
                f" Either the '{abstract_type.name}' type should provide"
                " a 'resolve_type' function or each possible type should provide"
                " an 'is_type_of' function.",
                nodes,
            )
        if is_object_type(runtime_type_name):
            raise GraphQLError(
                "Support for returning GraphQLObjectType from resolve_type was"
                " removed in GraphQL-core 3.2, please return type name instead."
            )
        if not isinstance(runtime_type_name, str):
            raise GraphQLError(
                f"Abstract type '{abstract_type.name}' must resolve"
                " to an Object type at runtime"
                f" for field '{parent_name}.{field_name}' with value"
                f" {inspect(value)}, received '{inspect(runtime_type_name)}'.",
                nodes,
            )
        runtime_type = schema.get_type(runtime_type_name)
        if runtime_type is None:
            raise GraphQLError(
                f"Abstract type '{abstract_type.name}' was resolved to a type"
                f" '{runtime_type_name}' that does not exist inside the schema.",
                nodes,
            )
        if not is_object_type(runtime_type):
            raise GraphQLError(
                f"Abstract type '{abstract_type.name}' was resolved"
                f" to a non-object type '{runtime_type_name}'.",
                nodes,
            )
        if not schema.is_sub_type(abstract_type, runtime_type):
            raise GraphQLError(
                f"Runtime Object type '{runtime_type.name}' is not a possible"
                f" type for '{abstract_type.name}'.",
                nodes,
            )
        completer = _object_value(variant, runtime_type, field)  # type: ignore[arg-type]
        if type(runtime_type_name) is str:
            by_name[runtime_type_name] = completer
        return completer

    def complete_abstract(run: _Run, field_path: Path, path: Path | None, value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if isinstance(value, Exception):
            raise value
        runtime: Any = resolve_type(value, field.info(run, field_path), abstract_type)
        if run.is_awaitable(runtime):
            return _await_runtime_type(run, runtime_completer, runtime, field_path, path, value)
        return runtime_completer(runtime, value)(run, field_path, path, value)

    return complete_abstract


async def _await_runtime_type(
    run: _Run,
    runtime_completer: Callable[[Any, Any], Completer],
    runtime: Awaitable[Any],
    field_path: Path,
    path: Path | None,
    value: Any,
) -> Any:
    completed = runtime_completer(await runtime, value)(run, field_path, path, value)
    if run.is_awaitable(completed):
        return await completed
    return completed


# --- planning --------------------------------------------------------------------------------


class _Variant:
    """The plans of one operation for one combination of ``@skip``/``@include`` variables."""

    def __init__(self, operation: CompiledOperation, conditions: dict[str, Any]) -> None:
        self.operation = operation
        self.schema = operation.schema
        self.conditions = conditions
        self._plans: dict[tuple[Any, ...], _ObjectPlan] = {}
        self.root: _ObjectPlan | None
        try:
            self.root = self.plan_root()
        except GraphQLError:
            # A null or missing condition variable at the top: graphql-core reports it for each
            # request, so each request plans the root again (and raises the same error).
            self.root = None

    def plan_root(self) -> _ObjectPlan:
        """graphql-core's ``collect_fields`` for the operation (may raise the ``GraphQLError``
        of a ``@skip``/``@include`` whose variable is null or missing, as graphql-core does)."""
        operation = self.operation
        return self.plan(operation.root_type, [operation.node.selection_set], set())

    def object_plan(self, object_type: GraphQLObjectType, nodes: list[FieldNode]) -> _ObjectPlan:
        """The sub-selection of ``nodes`` on ``object_type`` (graphql-core's
        ``collect_sub_fields``: one set of visited fragments across the nodes)."""
        key = (object_type.name, *map(id, nodes))
        plan = self._plans.get(key)
        if plan is None:
            selection_sets = [node.selection_set for node in nodes if node.selection_set]
            plan = self.plan(object_type, selection_sets, set())
            self._plans[key] = plan
        return plan

    def plan(
        self,
        object_type: GraphQLObjectType,
        selection_sets: list[SelectionSetNode],
        visited: set[str],
    ) -> _ObjectPlan:
        collected: dict[str, list[FieldNode]] = {}
        for selection_set in selection_sets:
            self.collect(object_type, selection_set, collected, visited)
        fields = []
        for key, nodes in collected.items():
            field = self.field(object_type, key, nodes)
            if field is not None:
                fields.append(field)
        return _ObjectPlan(object_type.name, tuple(fields))

    def collect(
        self,
        runtime_type: GraphQLObjectType,
        selection_set: SelectionSetNode,
        fields: dict[str, list[FieldNode]],
        visited: set[str],
    ) -> None:
        """graphql-core's ``collect_fields_impl`` with this variant's condition values."""
        fragments = self.operation.fragments
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if not self.included(selection):
                    continue
                key = selection.alias.value if selection.alias else selection.name.value
                fields.setdefault(key, []).append(selection)
            elif isinstance(selection, InlineFragmentNode):
                if not self.included(selection) or not self.applies(selection, runtime_type):
                    continue
                self.collect(runtime_type, selection.selection_set, fields, visited)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visited or not self.included(selection):
                    continue
                visited.add(name)
                fragment = fragments.get(name)
                if not fragment or not self.applies(fragment, runtime_type):
                    continue
                self.collect(runtime_type, fragment.selection_set, fields, visited)

    def included(self, node: FieldNode | InlineFragmentNode | FragmentSpreadNode) -> bool:
        if not node.directives:
            return True
        skip = get_directive_values(GraphQLSkipDirective, node, self.conditions)
        if skip and skip["if"]:
            return False
        include = get_directive_values(GraphQLIncludeDirective, node, self.conditions)
        return not (include and not include["if"])

    def applies(
        self,
        fragment: InlineFragmentNode | FragmentDefinitionNode,
        object_type: GraphQLObjectType,
    ) -> bool:
        condition = fragment.type_condition
        if not condition:
            return True
        conditional_type = type_from_ast(self.schema, condition)
        if conditional_type is object_type:
            return True
        if is_abstract_type(conditional_type):
            return self.schema.is_sub_type(conditional_type, object_type)  # type: ignore[arg-type]
        return False

    def field(
        self, parent_type: GraphQLObjectType, key: str, nodes: list[FieldNode]
    ) -> _Field | None:
        node = nodes[0]
        name = node.name.value
        field_def = _field_def(self.schema, parent_type, name)
        if field_def is None:
            return None  # graphql-core leaves such a key out of the response
        compiler = self.operation.compiler
        return_type = field_def.type
        field = _Field()
        field.key = key
        field.name = name
        field.attname = name
        field.default = None
        field.nodes = nodes
        field.node = node
        field.field_def = field_def
        field.typename = parent_type.name
        field.nullable = not is_non_null_type(return_type)
        field.info_head = (name, nodes, return_type, parent_type)
        field.fast, field.fast_checked, field.serialize = _fast_types(return_type)
        field.args = self.static_arguments(field_def, node)
        resolver = field_def.resolve or default_field_resolver
        field.resolver = resolver
        field.kind = _CALL
        if compiler.middleware is not None:
            field.resolver = compiler.middleware.get_field_resolver(resolver)
        elif field_def is TypeNameMetaFieldDef:
            field.kind = _TYPENAME
            field.default = parent_type.name
        elif field.args is not None:
            if field_def.resolve is None:
                field.kind = _CORE
            elif isinstance(resolver, partial) and not resolver.keywords:
                kind = compiler.graphene_reader(resolver.func)
                if kind is not None and len(resolver.args) == 2:
                    field.kind = kind
                    field.attname, field.default = resolver.args
        field.complete = self.completer(return_type, field)
        return field

    def static_arguments(self, field_def: GraphQLField, node: FieldNode) -> dict[str, Any] | None:
        """The argument values when they cannot change between requests, else ``None``."""
        if any(_uses_variables(argument.value) for argument in node.arguments or ()):
            return None
        try:
            args = get_argument_values(field_def, node, {})
        except Exception:
            return None  # raised per call, where graphql-core raises it
        if all(isinstance(value, _IMMUTABLE) for value in args.values()):
            return args
        return None

    def completer(self, return_type: GraphQLOutputType, field: _Field) -> Completer:
        """graphql-core's ``complete_value``, unrolled for ``return_type``."""
        if isinstance(return_type, GraphQLNonNull):
            message = f"Cannot return null for non-nullable field {field.typename}.{field.name}."
            if is_object_type(return_type.of_type):
                return _object_completer(self, return_type.of_type, field, message)
            inner = self.completer(return_type.of_type, field)
            return _non_null_completer(inner, message)
        if is_list_type(return_type):
            item_type: Any = return_type.of_type  # type: ignore[union-attr]
            named = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
            if is_object_type(named) and not named.is_type_of:
                complete_item = self.completer(item_type, field)
                return _object_list_completer(self, return_type, field, complete_item)  # type: ignore[arg-type]
            return _list_completer(self, return_type, field)  # type: ignore[arg-type]
        if is_leaf_type(return_type):
            return _leaf_completer(return_type)
        if is_abstract_type(return_type):
            return _abstract_completer(self, return_type, field)  # type: ignore[arg-type]
        if is_object_type(return_type):
            return _object_completer(self, return_type, field, None)  # type: ignore[arg-type]
        raise _Unsupported(f"unexpected output type {inspect(return_type)}")


class CompiledOperation:
    """One operation of one document, planned against the schema."""

    def __init__(
        self,
        compiler: Compiler,
        document: DocumentNode,
        operation_name: str | None,
    ) -> None:
        self.compiler = compiler
        self.schema = schema = compiler.schema
        operation: OperationDefinitionNode | None = None
        fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                if operation_name is None:
                    if operation is not None:
                        raise _Unsupported("several operations and no operation name")
                    operation = definition
                elif definition.name and definition.name.value == operation_name:
                    operation = definition
            elif isinstance(definition, FragmentDefinitionNode):
                fragments[definition.name.value] = definition
        if operation is None:
            raise _Unsupported("no such operation")
        root_type = schema.get_root_type(operation.operation)
        if root_type is None:
            raise _Unsupported(f"the schema has no {operation.operation.value} type")
        self.node = operation
        self.fragments = fragments
        self.root_type = root_type
        self.serial = operation.operation == OperationType.MUTATION
        self.variable_definitions = operation.variable_definitions or ()
        self.conditions = _condition_variables(operation, fragments)
        self.variants: dict[tuple[Any, ...], _Variant | None] = {}
        self.reported = False
        if not self.conditions:
            self.variants[()] = _Variant(self, {})

    def variant(self, variables: dict[str, Any]) -> _Variant | None:
        names = self.conditions
        if not names:
            return self.variants[()]
        key = tuple(variables.get(name, _MISSING) for name in names)
        variant = self.variants.get(key)
        if variant is None and key not in self.variants:
            if not all(
                value is True or value is False or value is None or value is _MISSING
                for value in key
            ):
                return None
            if len(self.variants) >= MAX_VARIANTS:
                self.compiler.report_once(self, "too many @skip/@include variable combinations")
                return None
            # A null or missing condition stays so: planning the selection that holds it raises
            # graphql-core's error, where graphql-core collects that selection.
            conditions = {
                name: value for name, value in zip(names, key, strict=True) if value is not _MISSING
            }
            try:
                variant = _Variant(self, conditions)
            except (_Unsupported, RecursionError) as exc:
                self.compiler.report_once(self, str(exc) or type(exc).__name__)
                variant = None
            self.variants[key] = variant
        return variant

    def execute(
        self, root_value: Any, context: Any, raw_variables: dict[str, Any] | None
    ) -> ExecutionResult | Awaitable[ExecutionResult] | None:
        """graphql-core's ``execute`` for this operation, or ``None``: run graphql-core's."""
        if raw_variables is not None and not isinstance(raw_variables, dict):
            return None  # graphql-core raises its TypeError
        compiler = self.compiler
        if self.variable_definitions:
            coerced = get_variable_values(
                self.schema,
                self.variable_definitions,
                raw_variables or {},
                max_errors=MAX_COERCION_ERRORS,
            )
            if isinstance(coerced, list):
                return ExecutionResult(None, coerced)
            variables: dict[str, Any] = coerced
        else:
            variables = {}
        variant = self.variant(variables)
        if variant is None:
            return None
        run = _Run(
            (
                self.schema,
                self.fragments,
                root_value,
                self.node,
                variables,
                context,
                compiler.info_is_awaitable,
            ),
            variables,
            compiler.is_awaitable,
        )
        try:
            root = variant.root
            if root is None:
                root = variant.plan_root()
            if self.serial:
                data = _execute_fields_serially(run, root, root_value, None)
            else:
                data = _execute_fields(run, root, root_value, None)
            if compiler.is_awaitable(data):
                return _await_response(run, data)
        except GraphQLError as error:
            run.add_error(error, None)
            return run.response(None)
        return run.response(data)


async def _await_response(run: _Run, pending: Awaitable[dict[str, Any]]) -> ExecutionResult:
    try:
        data = await pending
    except GraphQLError as error:
        run.add_error(error, None)
        return run.response(None)
    return run.response(data)


class Compiler:
    """Plans operations of cached documents for one schema, resolver middleware and awaitable
    check (``Engine`` holds one).

    ``plans`` (per document, e.g. ``CachedDocument.plans``) maps an operation name to its
    ``CompiledOperation``, or to ``None`` when graphql-core runs that operation.
    """

    def __init__(
        self,
        schema: GraphQLSchema,
        *,
        middleware: Sequence[Any] | MiddlewareManager | None = None,
        is_awaitable: Callable[[Any], bool] | None = None,
    ) -> None:
        self.schema = schema
        if isinstance(middleware, MiddlewareManager):
            self.middleware: MiddlewareManager | None = middleware
        elif middleware:
            self.middleware = MiddlewareManager(*middleware)
        else:
            self.middleware = None
        if is_awaitable is None:
            is_awaitable = core_is_awaitable
        #: What resolvers see as ``info.is_awaitable`` (graphql-core passes its own predicate).
        self.info_is_awaitable = is_awaitable
        self.is_awaitable = awaitable_check(is_awaitable)
        self.graphene_readers = _graphene_readers()

    def graphene_reader(self, function: Any) -> int | None:
        """The direct read that replaces a call of ``function``, if it is graphene's."""
        for known, kind in self.graphene_readers.items():
            if function is known:
                return kind
        return None

    def operation(
        self,
        plans: dict[str | None, CompiledOperation | None],
        document: DocumentNode,
        operation_name: str | None,
    ) -> CompiledOperation | None:
        """The compiled operation, compiling it on first use; ``None``: use graphql-core."""
        try:
            return plans[operation_name]
        except KeyError:
            pass
        try:
            compiled: CompiledOperation | None = CompiledOperation(self, document, operation_name)
        except (_Unsupported, RecursionError) as exc:
            log.info(
                "compiled execution: operation %r runs on graphql-core (%s)",
                operation_name,
                str(exc) or type(exc).__name__,
            )
            compiled = None
        except Exception:
            log.exception(
                "compiled execution: planning operation %r failed; it runs on graphql-core",
                operation_name,
            )
            compiled = None
        plans[operation_name] = compiled
        return compiled

    def execute(
        self,
        plans: dict[str | None, CompiledOperation | None],
        document: DocumentNode,
        operation_name: str | None,
        root_value: Any,
        context: Any,
        variables: dict[str, Any] | None,
    ) -> ExecutionResult | Awaitable[ExecutionResult] | None:
        """Run the operation compiled, or return ``None``: the caller runs graphql-core's
        ``execute``."""
        compiled = plans.get(operation_name)
        if compiled is None:
            compiled = self.operation(plans, document, operation_name)
            if compiled is None:
                return None
        return compiled.execute(root_value, context, variables)

    def report_once(self, compiled: CompiledOperation, reason: str) -> None:
        if compiled.reported:
            return
        compiled.reported = True
        name = compiled.node.name.value if compiled.node.name else None
        log.info("compiled execution: some requests of %r run on graphql-core (%s)", name, reason)
