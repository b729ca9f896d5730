"""Schemas and data for the differential tests of compiled execution
(``tests/unit/test_compiled_differential.py``).

Every resolver and every piece of data is a pure function of a seed, so that two executions of
the same document with the same seed (one by graphql-core, one compiled) see the same values,
built afresh for each (coroutines and async generators can be consumed only once):

- ``zoo``: a graphene schema with interfaces, unions, enums, a custom scalar, an input object,
  lists of non-nulls, sync and async resolvers, mutations, and graphene's default resolvers over
  objects and dicts. A ``Context`` carries the seed and a ``chaos`` percentage: that share of the
  resolvers with behaviour raise (a plain exception or a ``GraphQLError``) or return null; data
  attributes also hold nulls, wrong values, awaitables and exceptions. Every resolver records
  what it saw of ``info`` in ``Context.seen``; mutations record their order in ``Context.log``.
- ``fabric``: an SDL schema without resolvers (graphql-core's default resolver) over lazily made
  objects and mappings (``Fake``, ``FakeMap``) whose attributes are values, callables,
  awaitables, exceptions, async iterables and wrong values; ``is_type_of`` and ``resolve_type``
  functions, some of them asynchronous.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from functools import partial
from typing import Any

import graphene
from graphql import (
    GraphQLError,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    StringValueNode,
    build_schema,
    get_named_type,
    is_abstract_type,
    is_enum_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.pyutils import Undefined


def fate(seed: int, *parts: Any) -> int:
    """A number in ``0..99`` determined by ``seed`` and ``parts``."""
    return zlib.crc32(repr((seed, parts)).encode()) % 100


async def later(make: Callable[[], Any], hops: int) -> Any:
    """``make()`` after ``hops`` trips through the event loop."""
    for _ in range(hops):
        await asyncio.sleep(0)
    return make()


def snapshot(info: GraphQLResolveInfo, context: Context) -> tuple[Any, ...]:
    """What a resolver can read from ``info``, as comparable values."""
    return (
        info.field_name,
        tuple(info.path.as_list()),
        info.path.typename,
        str(info.return_type),
        info.parent_type.name,
        tuple((node.loc.start if node.loc else -1) for node in info.field_nodes),
        info.schema is context.schema,
        tuple(sorted(info.fragments)),
        info.root_value is context.root,
        info.operation.name.value if info.operation.name else None,
        repr(sorted(info.variable_values.items())),
        info.context is context,
        info.is_awaitable is context.is_awaitable,
    )


class Context:
    """Per execution: the seed, the chaos level, and what the resolvers saw and did."""

    def __init__(
        self,
        seed: int,
        chaos: int,
        *,
        use_async: bool,
        schema: Any = None,
        root: Any = None,
        is_awaitable: Any = None,
    ) -> None:
        self.seed = seed
        self.chaos = chaos
        self.use_async = use_async
        self.schema = schema
        self.root = root
        self.is_awaitable = is_awaitable
        self.seen: list[tuple[Any, ...]] = []
        self.log: list[str] = []
        self.counter = 0


def act(info: Any, make: Callable[[], Any], *, nullable_chaos: bool = True) -> Any:
    """Run a resolver's ``make`` under the context's chaos: maybe raise, maybe null, maybe later."""
    context: Context = info.context
    context.seen.append(snapshot(info, context))
    where = tuple(info.path.as_list())
    roll = fate(context.seed, "act", where)
    chaos = context.chaos

    def outcome() -> Any:
        if roll < chaos // 3:
            raise RuntimeError(f"boom at {list(where)}")
        if roll < 2 * chaos // 3:
            raise GraphQLError(f"refused at {list(where)}", extensions={"code": "FORBIDDEN"})
        if roll < chaos and nullable_chaos:
            return None
        return make()

    if context.use_async and fate(context.seed, "async", where) < 40:
        return later(outcome, fate(context.seed, "hops", where) % 3)
    return outcome()


# --- zoo: graphene ----------------------------------------------------------------------------


class Role(graphene.Enum):
    ADMIN = 1
    USER = 2
    GUEST = 3


class Stamp(graphene.Scalar):
    """``t<int>`` on the wire, an int in Python."""

    @staticmethod
    def serialize(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            if value == "none":
                return None
            raise ValueError(f"not a stamp: {value!r}")
        return f"t{value}"

    @staticmethod
    def parse_value(value: Any) -> int:
        if isinstance(value, str) and value[:1] == "t" and value[1:].isdigit():
            return int(value[1:])
        raise ValueError(f"not a stamp: {value!r}")

    @staticmethod
    def parse_literal(node: Any, _variables: Any = None) -> Any:
        if isinstance(node, StringValueNode) and node.value[:1] == "t" and node.value[1:].isdigit():
            return int(node.value[1:])
        return Undefined


class EchoInput(graphene.InputObjectType):
    text = graphene.String(required=True)
    times = graphene.Int(default_value=1)
    tags = graphene.List(graphene.NonNull(graphene.String))


class PersonData:
    def __init__(self, world: World, index: int) -> None:
        seed = world.seed
        self.world = world
        self.index = index
        self.id = f"p{index}"
        roll = fate(seed, "person", index)
        self.name: Any = None if roll % 7 == 0 else f"person {index}"
        self.age: Any = "old" if roll % 11 == 0 else (2**40 if roll % 31 == 0 else 20 + index)
        self.email: Any = None if roll % 13 == 0 else f"p{index}@example.com"
        self.role: Any = 99 if roll % 17 == 0 else [Role.ADMIN, Role.USER, Role.GUEST][index % 3]
        self.since: Any = "none" if roll % 19 == 0 else ("bad" if roll % 23 == 0 else index)
        self.tags: Any = ["a", None] if roll % 5 == 0 else ["a", f"t{index}"]
        self.scores: Any = [1.5, None, float(index)] if roll % 3 else 2.5
        if world.chaos and roll % 29 == 0:
            self.email = RuntimeError(f"email of p{index} is an exception")
        if world.use_async and roll % 4 == 0:
            name = self.name
            self.name = later(lambda: name, roll % 3)


class DogData:
    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.index = index
        self.id = f"d{index}"
        roll = fate(world.seed, "dog", index)
        self.name = f"dog {index}"
        self.barks: Any = None if (world.chaos and roll % 9 == 0) else bool(index % 2)


def cat_data(world: World, index: int) -> dict[str, Any]:
    roll = fate(world.seed, "cat", index)
    return {
        "kind": "cat",
        "id": f"c{index}",
        "name": None if roll % 6 == 0 else f"cat {index}",
        "lives": "nine" if (world.chaos and roll % 8 == 0) else 9 - index,
        "index": index,
    }


class World:
    """The data of one execution."""

    def __init__(self, seed: int, chaos: int, use_async: bool) -> None:
        self.seed = seed
        self.chaos = chaos
        self.use_async = use_async
        self.people = [PersonData(self, index) for index in range(6)]
        self.dogs = [DogData(self, index) for index in range(3)]
        self.cats = [cat_data(self, index) for index in range(3)]

    def find(self, id_: Any) -> Any:
        found: list[Any] = [*self.people, *self.dogs]
        for item in found:
            if item.id == id_:
                return item
        for cat in self.cats:
            if cat["id"] == id_:
                return cat
        return None


def _same(value: Any) -> Any:
    return value


def _world(info: Any) -> World:
    world: World = info.context.world
    return world


class Node(graphene.Interface):
    id = graphene.ID(required=True)

    @classmethod
    def resolve_type(cls, instance: Any, info: Any) -> Any:
        return _concrete(instance, info)


class Named(graphene.Interface):
    name = graphene.String()

    @classmethod
    def resolve_type(cls, instance: Any, info: Any) -> Any:
        return _concrete(instance, info)


def _concrete(instance: Any, info: Any) -> Any:
    roll = fate(info.context.seed, "type", tuple(info.path.as_list()))
    if info.context.chaos and roll < 5:
        return None  # graphene then asks default_type_resolver, which finds nothing
    if isinstance(instance, PersonData):
        return Person
    if isinstance(instance, DogData):
        return Dog
    if isinstance(instance, dict) and instance.get("kind") == "cat":
        return Cat
    return None


class Person(graphene.ObjectType):
    class Meta:
        interfaces = (Node, Named)

    age = graphene.Int()
    email = graphene.String(required=True)
    role = graphene.Field(Role)
    since = graphene.Field(Stamp)
    tags = graphene.List(graphene.NonNull(graphene.String), required=True)
    scores = graphene.List(graphene.Float)
    friends = graphene.List(
        graphene.NonNull(lambda: Person), first=graphene.Int(default_value=2), role=Role()
    )
    pets = graphene.List(lambda: Pet)
    best_pet = graphene.Field(lambda: Pet)
    nickname = graphene.String()
    strict_nickname = graphene.String(required=True)
    greeting = graphene.String(prefix=graphene.String(default_value="hi"), loud=graphene.Boolean())
    matrix = graphene.List(graphene.List(graphene.NonNull(graphene.Int)))
    peers = graphene.List(graphene.NonNull(lambda: Named), required=True)

    def resolve_friends(root: PersonData, info: Any, first: int, role: Any = None) -> Any:
        people = root.world.people
        chosen = [people[(root.index + step) % len(people)] for step in range(1, 1 + max(first, 0))]
        if role is not None:
            chosen = [person for person in chosen if person.role == role]
        return act(info, lambda: chosen)

    def resolve_pets(root: PersonData, info: Any) -> Any:
        world = root.world
        return act(info, lambda: [world.dogs[root.index % 3], None, world.cats[root.index % 3]])

    def resolve_best_pet(root: PersonData, info: Any) -> Any:
        world = root.world
        pet = world.dogs[root.index % 3] if root.index % 2 else world.cats[root.index % 3]
        return act(info, lambda: pet)

    async def resolve_nickname(root: PersonData, info: Any) -> Any:
        await asyncio.sleep(0)
        return act(info, lambda: f"nick {root.index}")

    def resolve_strict_nickname(root: PersonData, info: Any) -> Any:
        return act(info, lambda: f"strict {root.index}")

    def resolve_greeting(root: PersonData, info: Any, prefix: str, loud: bool | None = None) -> Any:
        text = f"{prefix} {root.id}"
        return act(info, lambda: text.upper() if loud else text)

    def resolve_matrix(root: PersonData, info: Any) -> Any:
        rows: list[Any] = [[1, 2], None, [root.index]]
        if fate(info.context.seed, "matrix", root.index) < info.context.chaos:
            rows.append([3, None])
        return act(info, lambda: rows)

    def resolve_peers(root: PersonData, info: Any) -> Any:
        world = root.world
        return act(info, lambda: [world.dogs[0], root, world.cats[1]], nullable_chaos=False)


class Dog(graphene.ObjectType):
    class Meta:
        interfaces = (Node, Named)

    barks = graphene.Boolean(required=True)
    owner = graphene.Field(Person)

    def resolve_owner(root: DogData, info: Any) -> Any:
        return act(info, lambda: root.world.people[root.index])


class Cat(graphene.ObjectType):
    class Meta:
        interfaces = (Node, Named)

    lives = graphene.Int()
    owner = graphene.Field(Person)

    def resolve_owner(root: dict[str, Any], info: Any) -> Any:
        return act(info, lambda: _world(info).people[root["index"] + 3])


class Pet(graphene.Union):
    class Meta:
        types = (Dog, Cat)

    @classmethod
    def resolve_type(cls, instance: Any, info: Any) -> Any:
        return _concrete(instance, info)


class SearchResult(graphene.Union):
    """No ``resolve_type``: graphene falls back on ``default_type_resolver``, which finds
    nothing for these objects (an error) unless it is a mapping with ``__typename``."""

    class Meta:
        types = (Person, Dog, Cat)


class ZooQuery(graphene.ObjectType):
    hello = graphene.String(name=graphene.String(default_value="world"))
    person = graphene.Field(Person, id=graphene.ID(default_value="p0"))
    people = graphene.List(Person, first=graphene.Int(default_value=3), role=Role())
    strict_people = graphene.List(
        graphene.NonNull(Person), required=True, first=graphene.Int(default_value=2)
    )
    node = graphene.Field(Node, id=graphene.ID(required=True))
    nodes = graphene.List(Node, required=True, ids=graphene.List(graphene.NonNull(graphene.ID)))
    search = graphene.List(graphene.NonNull(SearchResult), limit=graphene.Int(default_value=3))
    pet = graphene.Field(Pet, index=graphene.Int(default_value=0))
    stamp = graphene.Field(Stamp, at=Stamp())
    echo = graphene.String(input=EchoInput())
    stream = graphene.List(graphene.Int, upto=graphene.Int(default_value=3))
    not_a_list = graphene.List(graphene.Int)
    color = graphene.Field(Role, name=graphene.String(default_value="USER"))

    def resolve_hello(root: Any, info: Any, name: str) -> Any:
        return act(info, lambda: f"Hello, {name}!")

    def resolve_person(root: Any, info: Any, id: str) -> Any:
        return act(info, lambda: _world(info).find(id))

    def resolve_people(root: Any, info: Any, first: int, role: Any = None) -> Any:
        people: list[Any] = _world(info).people[: max(first, 0)]
        if role is not None:
            people = [person for person in people if person.role == role]
        context = info.context
        for index, person in enumerate(people):  # items that are awaitables or exceptions
            roll = fate(context.seed, "people", index)
            if roll < context.chaos // 3:
                people[index] = RuntimeError(f"person {index} is an exception")
            elif context.use_async and roll % 3 == 0:
                people[index] = later(partial(_same, person), roll % 2)
        return act(info, lambda: people)

    async def resolve_strict_people(root: Any, info: Any, first: int) -> Any:
        await asyncio.sleep(0)
        people: list[Any] = list(_world(info).people[: max(first, 0)])
        if fate(info.context.seed, "strict") < info.context.chaos:
            people.append(None)
        return people

    def resolve_node(root: Any, info: Any, id: str) -> Any:
        return act(info, lambda: _world(info).find(id))

    def resolve_nodes(root: Any, info: Any, ids: list[str] | None = None) -> Any:
        world = _world(info)
        return act(info, lambda: [world.find(id_) for id_ in ids or ["p1", "d0", "c2"]])

    def resolve_search(root: Any, info: Any, limit: int) -> Any:
        world = _world(info)
        found: list[Any] = [
            {"__typename": "Cat", **world.cats[0]},
            world.people[0],
            {"__typename": "Dog", "id": "d9", "name": "dict dog", "barks": True},
        ]
        return act(info, lambda: found[: max(limit, 0)])

    def resolve_pet(root: Any, info: Any, index: int) -> Any:
        world = _world(info)
        pets = [*world.dogs, *world.cats]
        return act(info, lambda: pets[index % len(pets)])

    def resolve_stamp(root: Any, info: Any, at: Any = None) -> Any:
        return act(info, lambda: at)

    def resolve_echo(root: Any, info: Any, input: Any = None) -> Any:
        return act(info, lambda: repr(sorted(input.items())) if input is not None else None)

    def resolve_stream(root: Any, info: Any, upto: int) -> Any:
        async def numbers() -> AsyncIterator[int]:
            for number in range(min(max(upto, 0), 5)):
                await asyncio.sleep(0)
                yield number

        return numbers()

    def resolve_not_a_list(root: Any, info: Any) -> Any:
        return 5

    def resolve_color(root: Any, info: Any, name: str) -> Any:
        return act(info, lambda: getattr(Role, name, name))


class ZooMutation(graphene.ObjectType):
    bump = graphene.Int(required=True, by=graphene.Int(default_value=1))
    slow_bump = graphene.Int(by=graphene.Int(default_value=1))
    fail = graphene.Int(loud=graphene.Boolean(default_value=False))
    must_fail = graphene.Int(required=True)
    add_person = graphene.Field(Person, name=graphene.String(required=True))

    def resolve_bump(root: Any, info: Any, by: int) -> Any:
        context: Context = info.context
        context.log.append(f"bump {by}")
        context.counter += by
        return context.counter

    async def resolve_slow_bump(root: Any, info: Any, by: int) -> Any:
        context: Context = info.context
        context.log.append(f"slow start {by}")
        await asyncio.sleep(0)
        context.counter += by
        context.log.append(f"slow end {by}")
        return context.counter

    def resolve_fail(root: Any, info: Any, loud: bool) -> Any:
        info.context.log.append("fail")
        if loud:
            raise GraphQLError("loud failure")
        raise ValueError("quiet failure")

    def resolve_must_fail(root: Any, info: Any) -> Any:
        info.context.log.append("must fail")
        return None

    def resolve_add_person(root: Any, info: Any, name: str) -> Any:
        info.context.log.append(f"add {name}")
        return act(info, lambda: _world(info).people[len(name) % 6])


zoo = graphene.Schema(query=ZooQuery, mutation=ZooMutation, types=[Person, Dog, Cat])


class ZooContext(Context):
    def __init__(self, seed: int, chaos: int, *, use_async: bool, **kwargs: Any) -> None:
        super().__init__(seed, chaos, use_async=use_async, **kwargs)
        self.world = World(seed, chaos, use_async)


# --- fabric: SDL, graphql-core's default resolver ---------------------------------------------

FABRIC_SDL = """
interface Thing { id: ID! label: String }
enum Color { RED GREEN BLUE }
type Box implements Thing {
  id: ID!
  label: String
  size(scale: Int = 1): Int
  items: [Thing]
  inner: Box
  tags: [String!]
  flag: Boolean!
  colors: [Color!]!
}
type Ball implements Thing { id: ID! label: String color: Color bounce(height: Float = 1.5): Float }
type Tube implements Thing { id: ID! label: String length: Int! }
union Any = Box | Ball | Tube
type Query {
  thing(id: ID): Thing
  things: [Thing!]
  any: [Any]
  box: Box!
  ball: Ball
  count(step: Int = 1): Int
  name: String
}
type Mutation { set(value: Int): Int push(tag: String!): [String] }
"""

_FABRIC_TYPES = ("Box", "Ball", "Tube")


def _fabric_kind(value: Any) -> Any:
    if isinstance(value, Fake):
        return value._kind
    if isinstance(value, Mapping):
        return value.get("__typename")
    return None


def _fabric_resolve_type(value: Any, info: Any, abstract_type: Any) -> Any:
    kind = _fabric_kind(value)
    roll = fate(info.context.seed, "resolve", tuple(info.path.as_list()))
    if info.context.chaos and roll < 4:
        return ["Ball", None, "Nope", "Query"][roll]
    if info.context.use_async and roll % 3 == 0:
        return later(lambda: kind, roll % 2)
    return kind


def _box_is_type_of(value: Any, info: Any) -> Any:
    verdict = _fabric_kind(value) == "Box"
    roll = fate(info.context.seed, "is_type_of", tuple(info.path.as_list()))
    if info.context.chaos and roll < 3:
        verdict = not verdict
    return verdict


def _tube_is_type_of(value: Any, info: Any) -> Any:
    verdict = _fabric_kind(value) == "Tube"
    if info.context.use_async:
        return later(lambda: verdict, 1)
    return verdict


def build_fabric() -> GraphQLSchema:
    schema = build_schema(FABRIC_SDL)
    thing = schema.type_map["Thing"]
    thing.resolve_type = _fabric_resolve_type  # type: ignore[attr-defined]
    schema.type_map["Box"].is_type_of = _box_is_type_of  # type: ignore[attr-defined]
    schema.type_map["Tube"].is_type_of = _tube_is_type_of  # type: ignore[attr-defined]
    return schema


fabric = build_fabric()


class Fabric:
    """Makes the values of one execution over ``fabric``."""

    def __init__(self, seed: int, chaos: int, use_async: bool) -> None:
        self.seed = seed
        self.chaos = chaos
        self.use_async = use_async

    def root(self, type_name: str) -> Fake:
        return Fake(self, type_name, (type_name,))

    def value(self, output_type: Any, where: tuple[Any, ...]) -> Any:
        """A value for ``output_type`` at ``where``: mostly right, sometimes not."""
        roll = fate(self.seed, "value", where)
        chaos = self.chaos
        if roll < chaos // 4:
            return None
        if roll < chaos // 2:
            return RuntimeError(f"value error at {list(where)}")
        if roll < 3 * chaos // 4:
            return ["wrong", 3.5, {"x": 1}, object()][roll % 4]
        value = self.proper(output_type, where, roll)
        if roll % 10 == 7:
            return lambda info, **args: value
        if self.use_async and roll % 10 in (3, 8):
            return later(lambda: value, roll % 3)
        return value

    def proper(self, output_type: Any, where: tuple[Any, ...], roll: int) -> Any:
        if is_non_null_type(output_type):
            return self.proper(output_type.of_type, where, roll)
        if is_list_type(output_type):
            items = [self.value(output_type.of_type, (*where, index)) for index in range(roll % 4)]
            if self.use_async and roll % 9 == 1:
                return _async_items(items)
            return items if roll % 2 else tuple(items)
        named = get_named_type(output_type)
        if is_enum_type(named):
            return ["RED", "GREEN", "BLUE"][roll % 3]
        if is_leaf_type(named):
            number = roll if roll % 13 else 2**33
            return {"ID": f"id{roll}", "String": f"s{roll}", "Int": number, "Float": roll / 4}.get(
                named.name, roll % 2 == 0
            )
        kind = _FABRIC_TYPES[roll % 3] if is_abstract_type(named) else named.name
        if roll % 5 == 0:
            return FakeMap(self, kind, where)
        return Fake(self, kind, where)


async def _async_items(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        await asyncio.sleep(0)
        yield item


class Fake:
    """An object of ``fabric`` type ``kind``: its attributes are made on access."""

    def __init__(self, fabric_: Fabric, kind: str, where: tuple[Any, ...]) -> None:
        self._fabric = fabric_
        self._kind = kind
        self._where = where

    def __getattr__(self, name: str) -> Any:
        if name.endswith("__typename"):
            return self._kind if name == "_Fake__typename" else None
        object_type = fabric.type_map.get(self._kind)
        if not isinstance(object_type, GraphQLObjectType) or name not in object_type.fields:
            raise AttributeError(name)
        return self._fabric.value(object_type.fields[name].type, (*self._where, name))


class FakeMap(Mapping[str, Any]):
    """The same as a mapping (graphql-core's default resolver then uses ``get``)."""

    def __init__(self, fabric_: Fabric, kind: str, where: tuple[Any, ...]) -> None:
        self._fake = Fake(fabric_, kind, where)

    def __getitem__(self, key: str) -> Any:
        if key == "__typename":
            return self._fake._kind
        try:
            return getattr(self._fake, key)
        except AttributeError:
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        object_type = fabric.type_map[self._fake._kind]
        return iter(["__typename", *object_type.fields])  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(list(iter(self)))


# --- fixed cases: null propagation, lists, abstract types -------------------------------------

NULLS_SDL = """
type Level {
  plain: String
  nothing: String
  broken: String
  strict: String!
  strictNothing: String!
  strictBroken: String!
  later: String
  laterNothing: String
  laterBroken: String
  laterStrictNothing: String!
  laterStrictBroken: String!
  slowBroken: String
  next: Level
  strictNext: Level!
  laterNext: Level
  laterStrictNext: Level!
  slowNext: Level
}
type Query { level: Level strictLevel: Level! }
"""

nulls = build_schema(NULLS_SDL)


def fails(message: str) -> Any:
    raise RuntimeError(message)


class Level:
    """Each field as graphql-core's default resolver finds it: a method called with ``info``."""

    def __init__(self, depth: int = 0) -> None:
        self.depth = depth

    def plain(self, info: Any) -> Any:
        return f"plain {self.depth}"

    def nothing(self, info: Any) -> Any:
        return None

    def broken(self, info: Any) -> Any:
        raise RuntimeError(f"broken {self.depth}")

    strict = plain
    strictNothing = nothing
    strictBroken = broken

    def later(self, info: Any) -> Any:
        return later(lambda: f"later {self.depth}", 1)

    def laterNothing(self, info: Any) -> Any:
        return later(lambda: None, 1)

    def laterBroken(self, info: Any) -> Any:
        return later(lambda: fails(f"later broken {self.depth}"), 1)

    laterStrictNothing = laterNothing
    laterStrictBroken = laterBroken

    def slowBroken(self, info: Any) -> Any:
        return later(lambda: fails(f"slow broken {self.depth}"), 4)

    def next(self, info: Any) -> Any:
        return Level(self.depth + 1)

    strictNext = next

    def laterNext(self, info: Any) -> Any:
        return later(lambda: Level(self.depth + 1), 1)

    laterStrictNext = laterNext

    def slowNext(self, info: Any) -> Any:
        return later(lambda: Level(self.depth + 1), 3)


def nulls_root() -> Any:
    return {"level": Level(), "strictLevel": Level()}


LISTS_SDL = """
type Lists {
  nullableOfNullable: [Int]
  nullableOfStrict: [Int!]
  strictOfNullable: [Int]!
  strictOfStrict: [Int!]!
  nested: [[Int!]]
  items: [Item]
  strictItems: [Item!]!
}
type Item { n: Int }
type Query { lists: Lists }
"""

lists = build_schema(LISTS_SDL)


async def _async_numbers(*values: Any) -> AsyncIterator[Any]:
    for value in values:
        await asyncio.sleep(0)
        yield value


#: What every field of ``Lists`` returns, by name (made afresh for each execution).
LIST_VALUES: dict[str, Callable[[], Any]] = {
    "values": lambda: [1, 2],
    "tuple": lambda: (1, 2),
    "generator": lambda: (number for number in (1, 2)),
    "with null": lambda: [1, None, 2],
    "null": lambda: None,
    "empty": lambda: [],
    "with exception": lambda: [1, RuntimeError("item exception"), 3],
    "with wrong item": lambda: [1, "two", 3],
    "not a list": lambda: 7,
    "a string": lambda: "ab",
    "a mapping": lambda: {"a": 1},
    "awaitable": lambda: later(lambda: [1, 2], 1),
    "awaitable null": lambda: later(lambda: None, 1),
    "awaitable failure": lambda: later(lambda: fails("list failed"), 1),
    "awaitable items": lambda: [later(lambda: 1, 2), 2, later(lambda: None, 1)],
    "awaitable failing item": lambda: [later(lambda: fails("item failed"), 1), 2],
    "async iterable": lambda: _async_numbers(1, 2),
    "async iterable with null": lambda: _async_numbers(1, None),
    "raises": lambda: fails("list resolver failed"),
}


def lists_root(name: str) -> Any:
    make = LIST_VALUES[name]

    def value(info: Any) -> Any:
        if info.field_name == "nested":
            return [make(), None, [3]]
        if info.field_name in ("items", "strictItems"):
            made = make()
            if isinstance(made, list):  # numbers become items; the rest stays as it is
                return [{"n": item} if type(item) is int else item for item in made]
            return made
        return make()

    return {"lists": {field: value for field in lists.type_map["Lists"].fields}}  # type: ignore[attr-defined]


ABSTRACT_SDL = """
interface Pet { name: String }
type Dog implements Pet { name: String woofs: Boolean }
type Cat implements Pet { name: String meows: Boolean }
type Human { name: String }
union Owner = Dog | Human
type Query { pets: [Pet] pet: Pet owners: [Owner] strictPets: [Pet!]! dog: Dog }
"""


def abstract_schema(
    resolve_type: Callable[..., Any] | None,
    is_type_of: Callable[..., Any] | None = None,
) -> GraphQLSchema:
    """The abstract schema with ``resolve_type`` on ``Pet`` and ``Owner`` and ``is_type_of`` on
    every object type (either may be None)."""
    schema = build_schema(ABSTRACT_SDL)
    for name in ("Pet", "Owner"):
        schema.type_map[name].resolve_type = resolve_type  # type: ignore[attr-defined]
    for name in ("Dog", "Cat", "Human"):
        if is_type_of is not None:
            schema.type_map[name].is_type_of = partial_is_type_of(is_type_of, name)  # type: ignore[attr-defined]
    return schema


def partial_is_type_of(check: Callable[..., Any], type_name: str) -> Callable[..., Any]:
    def is_type_of(value: Any, info: Any) -> Any:
        return check(value, info, type_name)

    return is_type_of


def abstract_root() -> Any:
    dog = {"kind": "Dog", "name": "Rex", "woofs": True}
    cat = {"kind": "Cat", "name": "Tom", "meows": False}
    human = {"kind": "Human", "name": "Ann"}
    return {
        "pets": [dog, cat, None],
        "pet": cat,
        "owners": [human, dog],
        "strictPets": [cat, dog],
        "dog": dog,
    }
