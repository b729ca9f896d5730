"""The example schema's queries: ``hello``, ``me``, ``note``, ``notes`` and ``history``."""

from __future__ import annotations

from typing import Any

import graphene

from service.example import store
from service.example.context import database, display_name, user
from service.example.errors import translate_db_errors
from service.example.inputs import MAX_CHATROOM_CHARS, MAX_PAGE, int_between, parse_id
from service.example.inputs import text as checked_text
from service.example.types import ChatMessage, Note, User


class Query(graphene.ObjectType):
    hello = graphene.String(required=True, args={"name": graphene.String()})
    me = graphene.Field(User, description="The signed-in user; null when anonymous.")
    note = graphene.Field(Note, id=graphene.ID(required=True))
    notes = graphene.NonNull(
        graphene.List(graphene.NonNull(Note)),
        first=graphene.Int(default_value=20),
        after=graphene.ID(description="Return notes with ids above this one."),
        description="Notes by id, ascending.",
    )
    history = graphene.NonNull(
        graphene.List(graphene.NonNull(ChatMessage)),
        chatroom=graphene.String(required=True),
        last=graphene.Int(default_value=50),
        description="The last messages of a chatroom, oldest first.",
    )

    @staticmethod
    def resolve_hello(root: object, info: graphene.ResolveInfo, name: str | None = None) -> str:
        return f"Hello, {name or 'world'}!"

    @staticmethod
    def resolve_me(root: object, info: graphene.ResolveInfo) -> dict[str, Any] | None:
        claims = user(info)
        if claims is None:
            return None
        return {"id": str(claims["sub"]), "name": display_name(claims)}

    @staticmethod
    @translate_db_errors
    async def resolve_note(
        root: object, info: graphene.ResolveInfo, id: str
    ) -> store.NoteRecord | None:
        return await store.get_note(database(info), parse_id(id, "id"))

    @staticmethod
    @translate_db_errors
    async def resolve_notes(
        root: object, info: graphene.ResolveInfo, first: int, after: str | None = None
    ) -> list[store.NoteRecord]:
        first = int_between(first, "first", 1, MAX_PAGE)
        after_id = 0 if after is None else parse_id(after, "after", minimum=0)
        return await store.list_notes(database(info), first=first, after=after_id)

    @staticmethod
    @translate_db_errors
    async def resolve_history(
        root: object, info: graphene.ResolveInfo, chatroom: str, last: int
    ) -> list[store.MessageRecord]:
        chatroom = checked_text(chatroom, "chatroom", MAX_CHATROOM_CHARS)
        last = int_between(last, "last", 1, MAX_PAGE)
        return await store.last_messages(database(info), chatroom, last)
