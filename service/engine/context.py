"""What the service reads from a resolver context, in one place.

The default context (no ``get_context`` given) is ``{"request": HTTPRequest, "request_id": str,
"user": None}``; the supervisor's workers add ``"settings"``, ``"db"`` and the verified JWT claims
as ``"user"``. A context may also be any object: then nothing is read from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["request_id_of", "user_sub"]


def user_sub(context: Any) -> str | None:
    """The caller's ``sub`` claim: ``context["user"]["sub"]`` when it is a non-blank string,
    else ``None`` (anonymous)."""
    if isinstance(context, Mapping):
        user = context.get("user")
        if isinstance(user, Mapping):
            sub = user.get("sub")
            if isinstance(sub, str) and sub.strip():
                return sub
    return None


def request_id_of(context: Any) -> str | None:
    """``context["request_id"]`` (or a ``request_id`` attribute) when it is a string."""
    value = context.get("request_id") if isinstance(context, Mapping) else None
    if value is None:
        value = getattr(context, "request_id", None)
    return value if isinstance(value, str) else None
