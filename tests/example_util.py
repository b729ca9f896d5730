"""Run GraphQL against the example schema in-process, with a context like the server's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.db import Database
from service.example.schema import schema
from service.settings import Settings


async def run(
    url: str,
    query: str,
    variables: Mapping[str, Any] | None = None,
    user: Mapping[str, Any] | None = None,
) -> Any:
    """Execute ``query`` against the database at ``url``; the result may carry ``errors``.

    Each call opens its own ``Database`` (a pool of at most two connections) and closes it
    before returning, so nothing outlives the test's event loop or the database's drop.
    """
    settings = Settings(database_url=url, db_pool_min_size=0, db_pool_max_size=2)
    async with Database(settings) as db:
        context = {"settings": settings, "db": db, "user": user}
        return await schema.execute_async(
            query, variable_values=dict(variables or {}), context_value=context
        )


async def data(url: str, query: str, variables: Mapping[str, Any] | None = None, **kw: Any) -> Any:
    """Execute ``query`` and return its data, failing the test on any error."""
    result = await run(url, query, variables, **kw)
    assert result.errors is None, result.errors
    return result.data
