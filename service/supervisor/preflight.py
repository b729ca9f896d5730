"""Checks before the supervisor starts, with a message that says what to fix."""

from __future__ import annotations

from service.settings import Settings


def preflight(settings: Settings) -> str | None:
    """Return a reason to refuse to start, or ``None``.

    More than one worker needs Redis: subscription events published in one worker must reach
    subscribers in every other worker, and only the Redis broker crosses processes.
    """
    if settings.workers < 1:
        return f"WORKERS must be at least 1, got {settings.workers}"
    if settings.workers > 1:
        if not settings.redis_url:
            return (
                f"WORKERS={settings.workers} needs REDIS_URL: subscription events are fanned "
                "out across workers through Redis pub/sub (set REDIS_URL, e.g. "
                "redis://127.0.0.1:6379/0, or run with WORKERS=1)"
            )
        from service.broker.redis import redis_reachable

        problem = redis_reachable(settings.redis_url)
        if problem:
            return f"WORKERS={settings.workers} needs a reachable Redis at REDIS_URL: {problem}"
    return None
