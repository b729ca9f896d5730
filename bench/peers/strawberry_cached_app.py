"""strawberry-graphql as in ``strawberry_app``, plus its own parse and validation caches.

Not strawberry's default: ``ParserCache`` and ``ValidationCache`` are opt-in schema extensions.
``serve()`` caches parsed and validated documents by default, so this row shows how much of the
gap to strawberry's default is that caching. Run: ``python -m uvicorn
bench.peers.strawberry_cached_app:app ...`` (``bench peers`` does).
"""

from __future__ import annotations

import strawberry
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from bench.peers.strawberry_app import Query

schema = strawberry.Schema(query=Query, extensions=[ParserCache, ValidationCache])
app = GraphQL(schema, graphql_ide=None)
