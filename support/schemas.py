"""A small graphene schema for transport and engine tests (no database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import graphene
from graphql import GraphQLError

from service.subscriptions import Subscription


class Item(graphene.ObjectType):
    name = graphene.String()
    child = graphene.Field(lambda: Item)
    blob = graphene.String()

    def resolve_child(root: Any, info: Any) -> dict[str, Any]:
        return {"name": "child"}

    def resolve_blob(root: Any, info: Any) -> str:
        return "x" * 2000


class Query(graphene.ObjectType):
    hello = graphene.String(name=graphene.String())
    slow = graphene.String(seconds=graphene.Float(default_value=0.5))
    boom = graphene.String()
    refused = graphene.String()
    must = graphene.NonNull(graphene.String)
    item = graphene.Field(Item)
    echo = graphene.String(value=graphene.Int(required=True))
    whoami = graphene.String()

    def resolve_hello(root: Any, info: Any, name: str | None = None) -> str:
        return f"Hello, {name or 'world'}!"

    async def resolve_slow(root: Any, info: Any, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    def resolve_boom(root: Any, info: Any) -> str:
        raise RuntimeError("secret internal detail")

    def resolve_refused(root: Any, info: Any) -> str:
        raise GraphQLError("you may not", extensions={"code": "FORBIDDEN"})

    def resolve_must(root: Any, info: Any) -> None:
        return None

    def resolve_item(root: Any, info: Any) -> dict[str, Any]:
        return {"name": "root"}

    def resolve_echo(root: Any, info: Any, value: int) -> str:
        return str(value)

    def resolve_whoami(root: Any, info: Any) -> str:
        return str(info.context.get("user") if isinstance(info.context, dict) else None)


class Mutation(graphene.ObjectType):
    bump = graphene.Int(by=graphene.Int(default_value=1))
    tick = graphene.Int(value=graphene.Int(required=True), group=graphene.String())

    def resolve_bump(root: Any, info: Any, by: int) -> int:
        return by + 1

    async def resolve_tick(root: Any, info: Any, value: int, group: str | None = None) -> int:
        return int(await Ticker.broadcast(group=group, payload={"value": value}))


# --- Subscription-class fixtures (server-side fanout) -------------------------------------------

SUBSCRIBED: list[str | None] = []  # groups whose subscribe() ran
UNSUBSCRIBED: list[dict[str, Any]] = []
PUBLISHING: list[int] = []  # values whose publish() has started, in order


class Ticker(Subscription):
    """``value`` events; ``payload = {"value": int, "delay": seconds?, "skip": bool?}``."""

    class Arguments:
        group = graphene.String()

    value = graphene.Int()

    @staticmethod
    def subscribe(root: Any, info: Any, group: str | None = None) -> list[str]:
        SUBSCRIBED.append(group)
        return [group] if group else []

    @staticmethod
    async def publish(payload: Any, info: Any, group: str | None = None) -> Any:
        PUBLISHING.append(payload["value"])
        delay = payload.get("delay")
        if delay:
            await asyncio.sleep(delay)
        if payload.get("skip"):
            return Subscription.SKIP
        return {"value": payload["value"]}

    @staticmethod
    def unsubscribed(root: Any, info: Any, group: str | None = None) -> None:
        UNSUBSCRIBED.append({"group": group})


class TinyQueueTicker(Ticker):
    """The same, with a notification queue of one."""

    notification_queue_limit = 1


EXECUTED: list[int] = []  # ``Shared.value`` resolutions, one per execution of an event


class Shared(Subscription):
    """Shared execution: ``publish`` hands every subscriber the same ``payload["item"]`` object
    (or SKIP when ``payload["skip"]`` names the subscriber's ``who``); ``value`` counts its
    executions in ``EXECUTED``; ``viewer`` reads the context, so a per-viewer ``result_key``
    keeps viewers apart."""

    class Arguments:
        who = graphene.String()
        group = graphene.String()

    value = graphene.Int()
    viewer = graphene.String()
    sent = graphene.Float(description="payload['item']['t'], when the publisher set it")
    pad = graphene.String(description="payload['item']['pad'], when the publisher set it")
    share_results = True

    @staticmethod
    def result_key(info: Any, **kwargs: Any) -> Any:
        context = info.context
        return context.get("viewer") if isinstance(context, dict) else None

    @staticmethod
    def subscribe(root: Any, info: Any, group: str | None = None, **kwargs: Any) -> list[str]:
        return [group] if group else []

    @staticmethod
    def publish(payload: Any, info: Any, who: str | None = None, **kwargs: Any) -> Any:
        if who is not None and who in payload.get("skip", ()):
            return Subscription.SKIP
        return payload["item"]

    @staticmethod
    def resolve_value(root: Any, info: Any) -> int:
        EXECUTED.append(root["value"])
        return int(root["value"])

    @staticmethod
    def resolve_sent(root: Any, info: Any) -> Any:
        return root.get("t")

    @staticmethod
    def resolve_pad(root: Any, info: Any) -> Any:
        return root.get("pad")

    @staticmethod
    def resolve_viewer(root: Any, info: Any) -> Any:
        context = info.context
        return context.get("viewer") if isinstance(context, dict) else None


class TinyShared(Shared):
    """The same, with a notification queue of one."""

    notification_queue_limit = 1


class Unshared(Shared):
    """The same, executed for each subscriber alone (the benchmark's comparison)."""

    share_results = False


class TickerSubscriptions(graphene.ObjectType):
    ticker = Ticker.Field()
    tiny_ticker = TinyQueueTicker.Field()
    shared = Shared.Field()
    tiny_shared = TinyShared.Field()
    unshared = Unshared.Field()
    count = graphene.Int(upto=graphene.Int(default_value=3))

    async def subscribe_count(root: Any, info: Any, upto: int) -> AsyncIterator[int]:
        for i in range(upto):
            yield i

    def resolve_count(root: Any, info: Any, upto: int) -> Any:
        return root


schema = graphene.Schema(query=Query, mutation=Mutation, subscription=TickerSubscriptions)
