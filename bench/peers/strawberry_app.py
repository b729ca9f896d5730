"""strawberry-graphql serving the peers' schema: ``strawberry.asgi.GraphQL`` for uvicorn.

Run: ``python -m uvicorn bench.peers.strawberry_app:app ...`` (``bench peers`` does).
"""

from __future__ import annotations

import strawberry
from strawberry.asgi import GraphQL

from bench.peers.schema import greet


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str | None = strawberry.UNSET) -> str:
        # UNSET (no default in the SDL, as in ``SDL``) is falsy, like None.
        return greet(name or None)


schema = strawberry.Schema(query=Query)
# Production shape: no GraphiQL page; POST application/json is what the bench sends.
app = GraphQL(schema, graphql_ide=None)
