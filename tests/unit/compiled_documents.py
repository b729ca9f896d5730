"""A hypothesis strategy for valid operations over any schema, for the differential tests of
compiled execution: fields with aliases and arguments (literals and variables, valid and not),
``__typename``, inline fragments and named fragments (some spread twice), ``@skip``/``@include``
with literal and variable conditions, several operations in one document.

A generated document may still break a validation rule the generator does not track (two fields
of one response name with different arguments, say): the tests skip those (``assume``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    OperationType,
    get_named_type,
    is_leaf_type,
)
from graphql.pyutils import Undefined
from hypothesis import strategies as st

MAX_DEPTH = 4
MAX_FRAGMENT_NESTING = 2


@dataclasses.dataclass
class Operation:
    source: str
    variables: dict[str, Any]
    operation_name: str | None
    kind: str


def possible(schema: GraphQLSchema, named: GraphQLNamedType) -> set[str]:
    """The object types a value of ``named`` can have."""
    if isinstance(named, GraphQLObjectType):
        return {named.name}
    return {item.name for item in schema.get_possible_types(named)}  # type: ignore[arg-type]


def required_input(input_type: GraphQLInputType, default: Any) -> bool:
    """An argument or input field that must be given."""
    return isinstance(input_type, GraphQLNonNull) and default is Undefined


class Builder:
    def __init__(
        self,
        draw: Any,
        schema: GraphQLSchema,
        scalar_literals: dict[str, list[str]],
        exclude: frozenset[str],
    ):
        self.draw = draw
        self.schema = schema
        self.scalar_literals = scalar_literals
        self.exclude = exclude
        self.variable_definitions: list[str] = []
        self.variables: dict[str, Any] = {}
        self.fragments: list[tuple[str, str, str]] = []  # name, type condition, body
        self.argument_texts: dict[str, str] = {}
        self.nesting = 0  # fragments within fragments, here
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def chance(self, percent: int) -> bool:
        return bool(self.draw(st.integers(0, 99)) < percent)

    # --- values -------------------------------------------------------------------------------

    def literal(self, input_type: GraphQLInputType, depth: int = 0, nullable: bool = True) -> str:
        if isinstance(input_type, GraphQLNonNull):
            return self.literal(input_type.of_type, depth, False)
        if nullable and depth < 2 and self.chance(8):
            return "null"
        if isinstance(input_type, GraphQLList):
            if self.chance(20):
                return self.literal(input_type.of_type, depth + 1)  # a single item is a list
            count = self.draw(st.integers(0, 2))
            return (
                "["
                + ", ".join(self.literal(input_type.of_type, depth + 1) for _ in range(count))
                + "]"
            )
        if isinstance(input_type, GraphQLInputObjectType):
            parts = []
            for name, field in input_type.fields.items():
                required = (
                    isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
                )
                if required or self.chance(50):
                    parts.append(f"{name}: {self.literal(field.type, depth + 1)}")
            return "{" + ", ".join(parts) + "}"
        if isinstance(input_type, GraphQLEnumType):
            return str(self.draw(st.sampled_from(sorted(input_type.values))))
        assert isinstance(input_type, GraphQLScalarType)
        name = input_type.name
        if name == "Int":
            return str(self.draw(st.integers(-2, 6)))
        if name == "Float":
            return str(self.draw(st.sampled_from(["0.5", "2", "-1.25"])))
        if name == "Boolean":
            return str(self.draw(st.sampled_from(["true", "false"])))
        if name in ("String", "ID"):
            return json.dumps(self.draw(st.sampled_from(["p1", "d0", "c2", "", "ab", "USER"])))
        return str(self.draw(st.sampled_from(self.scalar_literals[name])))

    def json_value(self, input_type: GraphQLInputType, depth: int = 0) -> Any:
        """A variable's value: mostly right for ``input_type``, now and then wrong."""
        if isinstance(input_type, GraphQLNonNull):
            return self.json_value(input_type.of_type, depth)
        if depth < 2 and self.chance(6):
            return None
        if self.chance(3):
            return {"wrong": True}
        if isinstance(input_type, GraphQLList):
            if self.chance(15):
                return self.json_value(input_type.of_type, depth + 1)
            count = self.draw(st.integers(0, 2))
            return [self.json_value(input_type.of_type, depth + 1) for _ in range(count)]
        if isinstance(input_type, GraphQLInputObjectType):
            value = {}
            for name, field in input_type.fields.items():
                required = (
                    isinstance(field.type, GraphQLNonNull) and field.default_value is Undefined
                )
                if required or self.chance(50):
                    value[name] = self.json_value(field.type, depth + 1)
            return value
        if isinstance(input_type, GraphQLEnumType):
            return self.draw(st.sampled_from(sorted(input_type.values)))
        assert isinstance(input_type, GraphQLScalarType)
        name = input_type.name
        if name == "Int":
            return self.draw(st.integers(-2, 6))
        if name == "Float":
            return self.draw(st.sampled_from([0.5, 2, -1.25]))
        if name == "Boolean":
            return self.draw(st.booleans())
        if name in ("String", "ID"):
            return self.draw(st.sampled_from(["p2", "d1", "c0", "", "xy", "ADMIN"]))
        return json.loads(self.draw(st.sampled_from(self.scalar_literals[name])))

    def variable(self, input_type: GraphQLInputType) -> str:
        name = self.fresh("v")
        default = ""
        if not isinstance(input_type, GraphQLNonNull) and self.chance(25):
            default = " = " + self.literal(input_type, 2)
        self.variable_definitions.append(f"${name}: {input_type}{default}")
        if not default or self.chance(50):
            self.variables[name] = self.json_value(input_type)
        return f"${name}"

    def condition(self) -> str:
        """``@skip``/``@include``, or nothing."""
        if not self.chance(18):
            return ""
        parts = []
        for directive in self.draw(st.sampled_from([["skip"], ["include"], ["skip", "include"]])):
            if self.chance(50):
                value = self.draw(st.sampled_from(["true", "false"]))
            else:
                name = self.fresh("c")
                if self.chance(85):
                    self.variable_definitions.append(f"${name}: Boolean!")
                    self.variables[name] = self.draw(st.booleans())
                else:  # nullable with a default: null reaches the directive at run time
                    default = self.draw(st.sampled_from(["true", "false"]))
                    self.variable_definitions.append(f"${name}: Boolean = {default}")
                    choice = self.draw(st.sampled_from(["omit", "null", "true", "false"]))
                    if choice != "omit":
                        self.variables[name] = {"null": None, "true": True, "false": False}[choice]
                value = f"${name}"
            parts.append(f"@{directive}(if: {value})")
        return " " + " ".join(parts)

    # --- selections ---------------------------------------------------------------------------

    def selection_set(self, named: GraphQLNamedType, depth: int) -> str:
        count = self.draw(st.integers(1, 3))
        parts = [self.selection(named, depth) for _ in range(count)]
        return "{ " + " ".join(part for part in parts if part) + " }"

    def selection(self, named: GraphQLNamedType, depth: int) -> str:
        kind = self.draw(st.integers(0, 99))
        if kind < 8:
            alias = self.draw(st.sampled_from(["", "__typename1: ", "t: "]))
            return f"{alias}__typename{self.condition()}"
        nestable = self.nesting < MAX_FRAGMENT_NESTING
        if kind < 22 and nestable:
            return self.fragment(named, depth)
        if isinstance(named, GraphQLUnionType):
            return self.fragment(named, depth) if nestable else "__typename"
        assert isinstance(named, GraphQLObjectType | GraphQLInterfaceType)
        return self.field(named, depth)

    def field(self, parent: GraphQLObjectType | GraphQLInterfaceType, depth: int) -> str:
        names = [
            name for name in sorted(parent.fields) if f"{parent.name}.{name}" not in self.exclude
        ]
        if not names:
            return "__typename"
        if depth >= MAX_DEPTH:
            leaves = [n for n in names if is_leaf_type(get_named_type(parent.fields[n].type))]
            names = leaves or names
        name = self.draw(st.sampled_from(names))
        field = parent.fields[name]
        target = get_named_type(field.type)
        if not is_leaf_type(target) and depth >= MAX_DEPTH:
            return "__typename"
        alias = self.draw(st.sampled_from(["", f"{name}1: ", f"{name}2: "]))
        text = alias + name + self.arguments(alias + name, field.args)
        text += self.condition()
        if not is_leaf_type(target):
            text += " " + self.selection_set(target, depth + 1)
        return text

    def arguments(self, key: str, args: dict[str, Any]) -> str:
        """The arguments of the field at ``key``: the same for every use of that response key
        (fields of one response name must have equal arguments to merge)."""
        known = self.argument_texts.get(key)
        if known is not None:
            return known
        arguments = []
        for arg_name, arg in args.items():
            required = required_input(arg.type, arg.default_value)
            if not required and self.chance(45):
                continue
            if self.chance(35):
                arguments.append(f"{arg_name}: {self.variable(arg.type)}")
            else:
                arguments.append(f"{arg_name}: {self.literal(arg.type)}")
        text = "(" + ", ".join(arguments) + ")" if arguments else ""
        self.argument_texts[key] = text
        return text

    def fragment(self, named: GraphQLNamedType, depth: int) -> str:
        schema = self.schema
        mine = possible(schema, named)
        reusable = [
            (name, condition)
            for name, condition, _ in self.fragments
            if possible(schema, schema.type_map[condition]) & mine
        ]
        if reusable and self.chance(30):
            name, _ = self.draw(st.sampled_from(reusable))
            return f"...{name}{self.condition()}"
        conditions = self.fragment_conditions(named)
        condition = self.draw(st.sampled_from(conditions))
        self.nesting += 1
        try:
            if condition is None:
                return f"...{self.condition()} {self.selection_set(named, depth)}"
            target = schema.type_map[condition]
            body = self.selection_set(target, depth)
        finally:
            self.nesting -= 1
        if self.chance(40):
            name = self.fresh("F")
            self.fragments.append((name, condition, body))
            return f"...{name}{self.condition()}"
        return f"... on {condition}{self.condition()} {body}"

    def fragment_conditions(self, named: GraphQLNamedType) -> list[str | None]:
        """Type conditions that can apply within ``named``."""
        schema = self.schema
        mine = possible(schema, named)
        options: list[str | None] = [None, named.name]
        for type_ in schema.type_map.values():
            if type_.name.startswith("__") or type_.name == named.name:
                continue
            composite = (GraphQLObjectType, GraphQLInterfaceType, GraphQLUnionType)
            if isinstance(type_, composite) and possible(schema, type_) & mine:
                options.append(type_.name)
        return options


@st.composite
def operations(
    draw: Any,
    schema: GraphQLSchema,
    *,
    kinds: tuple[str, ...] = ("query",),
    scalar_literals: dict[str, list[str]] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Operation:
    """``exclude``: fields (``Type.field``) never to select."""
    builder = Builder(draw, schema, scalar_literals or {}, exclude)
    kind = draw(st.sampled_from(kinds))
    root = schema.get_root_type(OperationType(kind))
    assert root is not None
    body = builder.selection_set(root, 1)
    name = draw(st.sampled_from(["", "Op"]))
    header = kind
    if name:
        header += f" {name}"
    if builder.variable_definitions:
        header += "(" + ", ".join(builder.variable_definitions) + ")"
    parts = [f"{header} {body}"]
    operation_name = None
    if name and draw(st.integers(0, 99)) < 25:
        parts.append("query Other { __typename }")
        operation_name = name
    elif name and draw(st.integers(0, 99)) < 50:
        operation_name = name
    for fragment_name, condition, fragment_body in builder.fragments:
        parts.append(f"fragment {fragment_name} on {condition} {fragment_body}")
    return Operation("\n".join(parts), builder.variables, operation_name, kind)
