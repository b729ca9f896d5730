"""The shared store of automatic persisted queries: Redis, one key per document.

``graphql-service:apq:<sha256>`` holds the document text with a TTL of ``APQ_TTL_S``; a read
renews the TTL (``GETEX``), so documents in use stay while unused ones expire. Every worker on
every host reads and writes the same keys, so a document registered through one worker runs by
hash on all of them, and a restarted worker finds what the others stored.

The store never retries and never waits long: each call is bounded by ``APQ_TIMEOUT_S``
(``PersistedOperations`` adds the same bound around it), and a failure is reported to the
caller, which answers "not found" (clients then send the full document). redis-py connects
lazily, so a worker starts while Redis is down and uses it once it is back.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

__all__ = ["KEY_PREFIX", "RedisAPQStore"]

KEY_PREFIX = "graphql-service:apq:"


class RedisAPQStore:
    """An ``APQStore`` (``service.engine.persisted``) on Redis at ``url``."""

    def __init__(self, url: str, *, ttl_s: float, timeout_s: float) -> None:
        self.ttl_s = max(1, int(ttl_s))
        self.client: Any = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=16,
        )

    async def get(self, document_id: str) -> str | None:
        value = await self.client.getex(KEY_PREFIX + document_id, ex=self.ttl_s)
        return value.decode("utf-8", "surrogatepass") if value is not None else None

    async def put(self, document_id: str, document: str) -> None:
        await self.client.set(
            KEY_PREFIX + document_id, document.encode("utf-8", "surrogatepass"), ex=self.ttl_s
        )

    async def close(self) -> None:
        await self.client.aclose()
