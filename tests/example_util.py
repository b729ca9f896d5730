"""Run GraphQL against the example schema in-process, with a context like the server's, or
serve it wired as the supervisor's workers wire it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from service.db import Database
from service.db.outbox import OutboxRelay
from service.example.schema import schema
from service.server.application import make_context_getter, make_ws_authenticator
from service.server.serve import Server, serve
from service.settings import Settings
from service.subscriptions import fanout as fanouts


@contextlib.asynccontextmanager
async def serving(settings: Settings, **relay_options: Any) -> AsyncIterator[Server]:
    """The example schema on a TCP port, as a worker serves it: JWT context and WebSocket
    authentication, a ``Database`` in every context as ``"db"``, and the outbox relay
    (``relay_options`` go to ``OutboxRelay``). Closed on the way out."""
    database = Database(settings)
    relay = OutboxRelay(database, fanouts.publish, **relay_options)
    server = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=settings,
        get_context=make_context_getter(settings, database),
        authenticate=make_ws_authenticator(settings),
        on_start=[relay.start],
        on_close=[relay.close, database.close],
    )
    try:
        yield server
    finally:
        await server.close(2.0)


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
