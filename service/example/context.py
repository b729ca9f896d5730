"""What the example's resolvers read from the GraphQL context (a dict; anything else counts as
empty).

- ``"db"``: the ``service.db.Database`` the notes and chat fields use. Without one, those fields
  fail with a ``GraphQLError`` naming the missing key (there is no fallback: a pool made behind
  the caller's back would have nobody to close it). ``hello``, ``me`` and the subscriptions work
  without it.
- ``"user"``: None, or the verified JWT claims with ``sub`` and optionally ``name``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import GraphQLError

from service.db import Database
from service.engine import context as engine_context
from service.example.errors import unauthenticated


def _context(info: Any) -> Mapping[str, Any]:
    context = info.context
    return context if isinstance(context, Mapping) else {}


def database(info: Any) -> Database:
    """The context's ``"db"``; a ``GraphQLError`` saying what is missing when it has none."""
    db = _context(info).get("db")
    if not isinstance(db, Database):
        raise GraphQLError(
            f"'{info.field_name}' needs a service.db.Database in the GraphQL context under the "
            "key 'db' (the workers' context has one; see service/example/schema.py to add it)."
        )
    return db


def user_sub(info: Any) -> str | None:
    """The caller's ``sub``, or None when anonymous (no non-blank ``sub`` claim)."""
    return engine_context.user_sub(info.context)


def user(info: Any) -> Mapping[str, Any] | None:
    """The verified claims of the caller, or None when anonymous."""
    if user_sub(info) is None:
        return None
    claims: Mapping[str, Any] = _context(info)["user"]
    return claims


def require_user(info: Any) -> str:
    """The caller's ``sub``; ``UNAUTHENTICATED`` naming this field when anonymous."""
    sub = user_sub(info)
    if sub is None:
        raise unauthenticated(info.field_name)
    return sub


def display_name(claims: Mapping[str, Any]) -> str:
    """The ``name`` claim when it is a non-blank string, else the ``sub``."""
    name = claims.get("name")
    return name if isinstance(name, str) and name.strip() else str(claims["sub"])
