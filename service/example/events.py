"""Hooks the mutations call after a change is stored: the place to broadcast to subscribers.

Both do nothing yet; subscriptions will publish from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


async def on_note_changed(kind: str, note: Mapping[str, Any]) -> None:
    """``note`` was ``kind`` ("created", "updated" or "deleted"); ``note`` is its stored state."""
    return None


async def on_chat_message(message: Mapping[str, Any]) -> None:
    """``message`` was stored in its chatroom."""
    return None
