"""graphql-service: a fast production GraphQL server for graphene 3 schemas.

Public API: ``serve``, ``asgi_app``, ``Settings``, ``Subscription``, ``HTTPRequest``.
Attributes load lazily: importing ``service`` alone imports no metrics (the supervisor must set
``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client is first imported).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["HTTPRequest", "HTTPResponse", "Settings", "Subscription", "asgi_app", "serve"]

_LAZY = {
    "serve": "service.server.serve",
    "asgi_app": "service.server.asgi",
    "Settings": "service.settings",
    "HTTPRequest": "service.engine.http",
    "HTTPResponse": "service.engine.http",
    "Subscription": "service.subscriptions",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'service' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
