"""The events the mutations announce, written to the transactional outbox.

Each hook runs inside the mutation's ``Database.transaction()``, so the event commits with the
change or not at all; the worker's outbox relay publishes it to the subscribers (through Redis)
once committed, retrying while Redis is down (``service.db.outbox``). A mutation therefore never
answers with data whose event was lost, and never announces a change that did not commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.db import Transaction, outbox
from service.example.subscriptions import NoteChanged, OnNewChatMessage


async def on_note_changed(tx: Transaction, kind: str, note: Mapping[str, Any]) -> None:
    """``note`` was ``kind`` ("created", "updated" or "deleted"); ``note`` is its stored state."""
    await outbox.append(tx, *NoteChanged.event(payload={"kind": kind.upper(), "note": dict(note)}))


async def on_chat_message(
    tx: Transaction, message: Mapping[str, Any], sender_sub: str | None = None
) -> None:
    """``message`` was stored in its chatroom by the user ``sender_sub`` (None: anonymous)."""
    payload = {"message": dict(message), "sender_sub": sender_sub}
    await outbox.append(tx, *OnNewChatMessage.event(str(message["chatroom"]), payload))
