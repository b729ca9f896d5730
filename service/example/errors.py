"""GraphQL errors the example schema raises, with the codes clients branch on.

``BAD_USER_INPUT`` is the client's fault: fix the named argument and retry.
``UNAUTHENTICATED``: the field needs a signed-in user; send ``Authorization: Bearer <token>``
(or the token in the WebSocket ``connection_init`` payload).
``FORBIDDEN``: the user is known but may not do this (e.g. change someone else's note).
``SERVICE_UNAVAILABLE`` is ours: Postgres cannot serve now; the same request may succeed later.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from graphql import GraphQLError

from service.db import DatabaseUnavailable

BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"

P = ParamSpec("P")
T = TypeVar("T")


def bad_input(argument: str, problem: str) -> GraphQLError:
    """The argument ``argument`` was wrong; ``problem`` says how, e.g. "must not be empty"."""
    return GraphQLError(
        f"Argument '{argument}' {problem}.",
        extensions={"code": BAD_USER_INPUT, "argument": argument},
    )


def unauthenticated(field: str) -> GraphQLError:
    """Anonymous caller of ``field``, which needs a user."""
    return GraphQLError(
        f"You must be signed in to use '{field}': send 'Authorization: Bearer <token>'.",
        extensions={"code": UNAUTHENTICATED},
    )


def forbidden(message: str) -> GraphQLError:
    """The signed-in user may not do this; ``message`` says what was refused and why."""
    return GraphQLError(message, extensions={"code": FORBIDDEN})


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
