"""Hooks the mutations call after a change is stored: they broadcast to subscribers.

The change is already committed when these run. If the broker cannot take the event (Redis
down), the error is logged and counted and the mutation still returns its stored result: the
data was accepted, only the live notification was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from service.broker import BrokerUnavailable
from service.example.subscriptions import NoteChanged, OnNewChatMessage

log = logging.getLogger("service.example")


async def on_note_changed(kind: str, note: Mapping[str, Any]) -> None:
    """``note`` was ``kind`` ("created", "updated" or "deleted"); ``note`` is its stored state."""
    try:
        await NoteChanged.broadcast(payload={"kind": kind.upper(), "note": dict(note)})
    except BrokerUnavailable as exc:
        log.error("noteChanged not broadcast: %s", exc)


async def on_chat_message(message: Mapping[str, Any], sender_sub: str | None = None) -> None:
    """``message`` was stored in its chatroom by the user ``sender_sub`` (None: anonymous)."""
    try:
        await OnNewChatMessage.broadcast(
            group=str(message["chatroom"]),
            payload={"message": dict(message), "sender_sub": sender_sub},
        )
    except BrokerUnavailable as exc:
        log.error("onNewChatMessage not broadcast: %s", exc)
