"""Settings: one frozen object read from the environment.

Every knob has a unit in its name (``*_s`` seconds, ``*_bytes`` bytes) and a default that suits
development on one machine. ``Settings.from_env()`` reads ``os.environ``; tests build a
``Settings`` directly or with ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _tuple(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration; field ``foo_bar`` is read from env var ``FOO_BAR``."""

    # Storage and fanout.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/graphql_service"
    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_connect_timeout_s: float = 2.0
    db_acquire_timeout_s: float = 2.0
    redis_url: str = ""
    # Application: "module:attribute" naming a graphene Schema (or a GraphQLSchema).
    app: str = "service.example.schema:schema"
    # Supervisor and sockets.
    workers: int = 2
    socket_dir: str = "/tmp"
    graceful_timeout_s: float = 20.0
    # On a reload (HUP): old workers keep their WebSockets this long, then close them with 1012
    # spread over ws_reload_spread_s. Both must fit in graceful_timeout_s.
    ws_reload_drain_s: float = 10.0
    ws_reload_spread_s: float = 5.0
    worker_timeout_s: float = 30.0
    port: int = 8080
    # Count metrics in the workers (off: nothing is recorded; for measuring their cost).
    metrics_enabled: bool = True
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400
    # HTTP transport limits.
    max_body_bytes: int = 1_048_576
    max_header_bytes: int = 65_536
    keepalive_timeout_s: float = 75.0
    request_read_timeout_s: float = 30.0
    # GraphQL engine.
    document_cache_size: int = 1024
    max_document_bytes: int = 100_000
    max_variables_bytes: int = 256_000
    max_depth: int = 15
    max_aliases: int = 30
    max_fields: int = 500
    introspection: bool = True
    compiled_execution: bool = True
    max_inflight: int = 1000
    operation_timeout_s: float = 30.0
    metrics_operation_names: tuple[str, ...] = ()
    # WebSocket.
    ws_max_message_bytes: int = 1_048_576
    ws_max_subscriptions: int = 100
    ws_init_timeout_s: float = 3.0
    ws_keepalive_s: float = 12.0
    ws_transport_ping: bool = False
    confirm_subscriptions: bool = False
    # Bytes a WebSocket may be sent while its client is not reading before it is closed (1008).
    ws_max_unread_bytes: int = 1_048_576
    # Run each connection's operations one at a time, in arrival order.
    ws_strict_ordering: bool = False
    notification_queue_limit: int = 1000
    # Persisted operations: Apollo's APQ (shared through Redis, a local LRU in front) and a
    # manifest of trusted documents (mode allow-any or trusted-only).
    apq_enabled: bool = True
    apq_ttl_s: float = 86400.0
    apq_cache_size: int = 1024
    apq_timeout_s: float = 0.25
    trusted_documents: str = ""
    trusted_documents_mode: str = "allow-any"
    # Subscriptions over HTTP (SSE, multipart): heartbeat while no event is sent.
    http_stream_heartbeat_s: float = 5.0
    # Auth.
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str = ""
    jwt_issuer: str = ""
    jwt_leeway_s: float = 30.0
    # Browsers: GraphiQL on the GraphQL path, CORS (exact origins; empty: no CORS headers).
    graphiql: bool = True
    cors_allow_origins: tuple[str, ...] = ()
    cors_allow_credentials: bool = False
    cors_max_age_s: int = 600
    # Logs.
    log_format: str = "json"
    log_level: str = "info"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises ``ValueError`` naming the variable when a value does not parse.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(field.name.upper())
            if raw is None:
                continue
            default = field.default
            try:
                if isinstance(default, bool):
                    values[field.name] = _bool(raw)
                elif isinstance(default, int):
                    values[field.name] = int(raw)
                elif isinstance(default, float):
                    values[field.name] = float(raw)
                elif isinstance(default, tuple):
                    values[field.name] = _tuple(raw)
                else:
                    values[field.name] = raw
            except ValueError as exc:
                raise ValueError(f"environment variable {field.name.upper()}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]

    def slot_path(self, slot: int) -> str:
        """Path of worker ``slot``'s unix socket: ``{socket_dir}/worker{slot}``."""
        return os.path.join(self.socket_dir, f"worker{slot}")
