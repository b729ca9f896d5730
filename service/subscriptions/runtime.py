"""Process-wide subscription runtime: the broker in use and the fanout bookkeeping.

A worker installs its broker with ``install_broker`` at start; ``Subscription.broadcast`` and the
subscription streams find it with ``current_broker``. In a process with no installed broker (a
script, a Celery task, a test), publishing creates one from ``REDIS_URL`` on first use.

Wire format on a group's channel (inside the broker's envelope, which carries the send time):
``{"k": "n", "p": payload}`` for a notification, ``{"k": "u"}`` to end every subscription in the
group (server-side unsubscribe).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

from service.broker.base import Broker
from service.settings import Settings

log = logging.getLogger("service.subscriptions")

NOTIFY = "n"
UNSUBSCRIBE = "u"

# The broadcast time (unix seconds) of the notification the current task is about to write;
# set by a subscription stream, read by the transport after the frame is written (same task).
FANOUT_SENT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "fanout_sent_at", default=None
)

_broker: Broker | None = None
_loop: asyncio.AbstractEventLoop | None = None
_owned = False
_settings: Settings | None = None


def install_broker(
    broker: Broker | None,
    loop: asyncio.AbstractEventLoop | None = None,
    settings: Settings | None = None,
) -> None:
    """Make ``broker`` (running on ``loop``) the process's broker; ``None`` uninstalls."""
    global _broker, _owned, _loop, _settings
    _broker = broker
    _loop = loop
    _owned = False
    if settings is not None:
        _settings = settings


def current_broker() -> Broker | None:
    return _broker


def current_loop() -> asyncio.AbstractEventLoop | None:
    return _loop


def serves_this_loop() -> bool:
    """True when a broker was installed (not made on demand) for the running loop."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return _broker is not None and not _owned and _loop is loop


def settings() -> Settings:
    """The settings the worker installed, else the environment's."""
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


async def broker_for_publish() -> Broker:
    """The broker for the running loop: the installed one, else one made (and started) from the
    environment on first use. A broker belongs to the loop it runs on; another loop (a test, a
    script's ``asyncio.run``) gets its own instead of one bound to a finished loop.
    """
    global _broker, _owned, _loop
    loop = asyncio.get_running_loop()
    if _broker is None or _loop is not loop:
        from service.broker import make_broker

        broker = make_broker(settings().redis_url or None)
        await broker.start()
        _broker, _owned, _loop = broker, True, loop
    return _broker
