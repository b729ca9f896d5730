"""Compose the production service for one worker: schema, context, readiness, shutdown hooks.

The supervisor's workers call ``build_worker_server``; tests and ``serve()`` users compose their
own with ``build_server``. The app is named by ``Settings.app`` (``"module:attribute"``).
"""

from __future__ import annotations

import importlib
from typing import Any

from service.engine.http import HTTPRequest
from service.server.serve import Server, build_server
from service.settings import Settings


def load_app(spec: str) -> Any:
    """Import ``"package.module:attribute"``; raises ``ValueError`` naming what is missing."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"APP must look like 'package.module:attribute', got {spec!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"APP {spec!r}: module {module_name!r} has no {attribute!r}") from None


def make_context_getter(settings: Settings) -> Any:
    """The request context for the example domain:
    ``{"request", "request_id", "settings", "user": JWT claims or None}``."""

    def get_context(request: HTTPRequest) -> dict[str, Any]:
        return {
            "request": request,
            "request_id": request.request_id,
            "settings": settings,
            "user": None,
        }

    return get_context


def build_worker_server(settings: Settings, slot: int, worker: Any = None) -> Server:
    """The server a supervisor worker runs on ``settings.slot_path(slot)``."""
    from service.db import pool

    schema = load_app(settings.app)

    async def ready() -> bool:
        return await pool.ping(settings)

    async def close_db() -> None:
        await pool.close_pool()

    return build_server(
        schema,
        [{"protocol": "unix", "path": settings.slot_path(slot)}],
        settings=settings,
        get_context=make_context_getter(settings),
        ready_check=ready,
        atomic_unix=True,
        on_close=[close_db],
        identity={"slot": slot},
    )
