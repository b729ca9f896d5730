"""The peers' schema (``bench.peers.schema.SDL``) in graphene 3, as this project serves it."""

from __future__ import annotations

from typing import Any

import graphene

from bench.peers.schema import greet


class Query(graphene.ObjectType):
    # ``name`` is also a keyword of ``graphene.Field`` itself, so the argument goes in ``args``.
    hello = graphene.String(required=True, args={"name": graphene.String()})

    @staticmethod
    def resolve_hello(root: Any, info: graphene.ResolveInfo, name: str | None = None) -> str:
        return greet(name)


schema = graphene.Schema(query=Query)
