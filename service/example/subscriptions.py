"""The example schema's subscriptions: note changes, chat rooms, and a plain countdown.

- ``noteChanged: NoteEvent!``: every note mutation broadcasts ``{kind, note}``.
- ``onNewChatMessage(chatroom)``: one group per chatroom; a sender never receives their own
  messages when the sender is identified (``publish`` returns ``SKIP``).
- ``countdown(from)``: a plain graphene async-generator subscription, ``from`` down to 0.

``events`` broadcasts through ``NoteChanged`` and ``OnNewChatMessage``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import graphene

from service.example.context import user_sub
from service.example.errors import bad_input
from service.example.types import ChatMessage, NoteEvent
from service.subscriptions import Subscription

MAX_COUNTDOWN = 1000


class NoteChanged(Subscription):
    """Every note created, updated or deleted (payload ``{"kind", "note"}``)."""

    # The output reads only the payload: subscribers share one execution per event.
    share_results = True

    Output = NoteEvent


class OnNewChatMessage(Subscription):
    """New messages in one chatroom (payload ``{"message", "sender_sub"}``)."""

    class Arguments:
        chatroom = graphene.String(required=True)

    Output = ChatMessage
    # The message's fields read only the payload (``publish`` decides who sees it).
    share_results = True

    @staticmethod
    def subscribe(root: Any, info: Any, chatroom: str) -> list[str]:
        return [chatroom]

    @staticmethod
    def publish(payload: Any, info: Any, chatroom: str) -> Any:
        sender = payload.get("sender_sub")
        if sender is not None and sender == user_sub(info):
            return Subscription.SKIP
        return payload["message"]


class Subscriptions(graphene.ObjectType):
    note_changed = NoteChanged.Field(required=True)
    on_new_chat_message = OnNewChatMessage.Field(required=True)
    countdown = graphene.Int(
        required=True,
        args={"from_": graphene.Argument(graphene.Int, required=True, name="from")},
        description=f"Counts from `from` down to 0, then completes (at most {MAX_COUNTDOWN}).",
    )

    @staticmethod
    def subscribe_countdown(root: Any, info: Any, from_: int) -> AsyncIterator[int]:
        # Checked before the stream exists, so a bad argument fails the subscribe itself.
        if not 0 <= from_ <= MAX_COUNTDOWN:
            raise bad_input("from", f"must be between 0 and {MAX_COUNTDOWN}")
        return _count_down(from_)

    @staticmethod
    def resolve_countdown(root: int, info: Any, from_: int) -> int:
        return root


async def _count_down(start: int) -> AsyncIterator[int]:
    for value in range(start, -1, -1):
        yield value
