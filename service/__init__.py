"""graphql-service: a fast production GraphQL server for graphene 3 schemas.

Public API: ``serve``, ``asgi_app``, ``Settings``, ``Subscription``, ``HTTPRequest``.
"""

from __future__ import annotations

from typing import Any

from service.engine.http import HTTPRequest, HTTPResponse
from service.settings import Settings

__all__ = ["HTTPRequest", "HTTPResponse", "Settings", "asgi_app", "serve"]


def serve(*args: Any, **kwargs: Any) -> Any:
    """See ``service.server.serve.serve``."""
    from service.server.serve import serve as _serve

    return _serve(*args, **kwargs)


def asgi_app(*args: Any, **kwargs: Any) -> Any:
    """See ``service.server.asgi.asgi_app``."""
    from service.server.asgi import asgi_app as _asgi_app

    return _asgi_app(*args, **kwargs)
