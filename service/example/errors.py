"""GraphQL errors the example schema raises, with the codes clients branch on.

``BAD_USER_INPUT`` is the client's fault: fix the named argument and retry.
``SERVICE_UNAVAILABLE`` is ours: Postgres cannot serve now; the same request may succeed later.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from graphql import GraphQLError

from service.db import DatabaseUnavailable

BAD_USER_INPUT = "BAD_USER_INPUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"

P = ParamSpec("P")
T = TypeVar("T")


def bad_input(argument: str, problem: str) -> GraphQLError:
    """The argument ``argument`` was wrong; ``problem`` says how, e.g. "must not be empty"."""
    return GraphQLError(
        f"Argument '{argument}' {problem}.",
        extensions={"code": BAD_USER_INPUT, "argument": argument},
    )


def database_unavailable() -> GraphQLError:
    return GraphQLError("database unavailable", extensions={"code": SERVICE_UNAVAILABLE})


def translate_db_errors(resolver: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Make an async resolver answer ``SERVICE_UNAVAILABLE`` when Postgres is unavailable."""

    @functools.wraps(resolver)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await resolver(*args, **kwargs)
        except DatabaseUnavailable as exc:
            raise database_unavailable() from exc

    return guarded
