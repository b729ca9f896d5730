"""Redis pub/sub fanout broker (redis.asyncio)."""

from __future__ import annotations


def redis_reachable(url: str, timeout_s: float = 2.0) -> str | None:
    """``None`` when a PING to ``url`` succeeds, else the reason."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
