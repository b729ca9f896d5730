"""ariadne serving the peers' schema: ``ariadne.asgi.GraphQL`` for uvicorn.

Run: ``python -m uvicorn bench.peers.ariadne_app:app ...`` (``bench peers`` does).
"""

from __future__ import annotations

from typing import Any

from ariadne import QueryType, make_executable_schema
from ariadne.asgi import GraphQL

from bench.peers.schema import SDL, greet

query = QueryType()


@query.field("hello")
def resolve_hello(obj: Any, info: Any, name: str | None = None) -> str:
    return greet(name)


schema = make_executable_schema(SDL, query)
app = GraphQL(schema, debug=False)
