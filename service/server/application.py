"""Compose the production service for one worker: schema, context, readiness, shutdown hooks.

The supervisor's workers call ``build_worker_server``; tests and ``serve()`` users compose their
own with ``build_server``. The app is named by ``Settings.app`` (``"module:attribute"``).
"""

from __future__ import annotations

import importlib
from typing import Any

from service.db import Database
from service.db.outbox import OutboxRelay
from service.engine.http import HTTPRequest
from service.engine.persisted import PersistedOperations
from service.engine.recorder import NullRecorder
from service.server.persisted_store import RedisAPQStore
from service.server.serve import Server, build_server
from service.settings import Settings
from service.subscriptions import fanout as fanouts


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


def make_context_getter(settings: Settings, database: Database | None = None) -> Any:
    """The HTTP request context: ``{"request", "request_id", "settings", "user"}``, plus
    ``"db"`` (``database``) when one is given; ``user`` is the verified JWT claims from
    ``Authorization: Bearer`` or ``None``. An invalid token raises ``HTTPError(401)`` with
    ``WWW-Authenticate``. The caller owns ``database`` (closes it when the server closes)."""
    from service.auth import AuthError, Verifier, http_auth_error

    verifier = Verifier(settings)

    def get_context(request: HTTPRequest) -> dict[str, Any]:
        try:
            user = verifier.from_authorization(request.headers.get("authorization"))
        except AuthError as exc:
            raise http_auth_error(exc) from None
        context = {
            "request": request,
            "request_id": request.request_id,
            "settings": settings,
            "user": user,
        }
        if database is not None:
            context["db"] = database
        return context

    return get_context


def make_ws_authenticator(settings: Settings) -> Any:
    """WebSocket auth from the ``connection_init`` payload (keys: ``Authorization``,
    ``authorization``, ``authToken``, ``token``, ``headers.Authorization``). A bad token refuses
    the connection (4403 / ``connection_error``)."""
    from service.auth import AuthError, Verifier
    from service.server.ws_session import ConnectionRejected

    verifier = Verifier(settings)

    def authenticate(payload: Any, context: Any) -> Any:
        try:
            user = verifier.from_connection_params(payload)
        except AuthError as exc:
            raise ConnectionRejected(f"Forbidden: invalid token: {exc}") from None
        if user is not None and isinstance(context, dict):
            context["user"] = user
        return context

    return authenticate


def make_persisted(settings: Settings) -> tuple[PersistedOperations, list[Any]]:
    """Persisted operations for a worker: APQ shared through Redis (``REDIS_URL``; without it,
    this worker's LRU only) and the trusted documents of ``TRUSTED_DOCUMENTS``. Returns them
    with the ``on_close`` hooks they need. Raises ``ValueError`` for a bad manifest or mode."""
    store = None
    if settings.redis_url and settings.apq_enabled:
        store = RedisAPQStore(
            settings.redis_url, ttl_s=settings.apq_ttl_s, timeout_s=settings.apq_timeout_s
        )
    persisted = PersistedOperations.from_settings(settings, store)
    return persisted, [store.close] if store is not None else []


def build_worker_server(settings: Settings, slot: int, worker: Any = None) -> Server:
    """The server a supervisor worker runs on ``settings.slot_path(slot)``, with this worker's
    ``Database`` in every request context (``"db"``), pinged by /readyz and closed with it, and
    the relay of the transactional outbox (``service.db.outbox``)."""
    from service.observability.logging import configure_logging
    from service.observability.metrics import PrometheusRecorder

    logs = worker.logs if worker is not None else configure_logging(settings, slot=slot)

    schema = load_app(settings.app)
    recorder: Any = (
        PrometheusRecorder(settings.metrics_operation_names)
        if settings.metrics_enabled
        else NullRecorder()
    )
    database = Database(settings, metrics=recorder if settings.metrics_enabled else None)
    # Publishes the events mutations committed to the outbox, through this worker's fanout.
    relay = OutboxRelay(database, fanouts.publish)
    persisted, closers = make_persisted(settings)

    return build_server(
        schema,
        [{"protocol": "unix", "path": settings.slot_path(slot)}],
        settings=settings,
        get_context=make_context_getter(settings, database),
        ready_check=database.ping,
        atomic_unix=True,
        on_start=[relay.start],
        on_close=[relay.close, database.close, *closers],
        recorder=recorder,
        identity={"slot": slot},
        authenticate=make_ws_authenticator(settings),
        log_request=logs.request_logger(),
        log_operation=logs.ws_operation_logger(),
        persisted=persisted,
    )
