"""The example schema: notes (CRUD with an id cursor) and chat messages (send, history).

Resolvers check their arguments (``BAD_USER_INPUT`` naming the argument), call ``store``, and
after each successful change call the matching hook in ``events``. The GraphQL context is a dict:
``settings`` (a ``Settings``; read from the environment when absent) and ``user`` (None, or the
JWT claims with ``sub`` and optionally ``name``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import graphene

from service.example import events, store
from service.example.errors import translate_db_errors
from service.example.inputs import int_between, parse_id
from service.example.inputs import text as checked_text
from service.settings import Settings

MAX_TITLE_CHARS = 200
MAX_CHATROOM_CHARS = 100
MAX_MESSAGE_CHARS = 2000
MAX_PAGE = 100


@functools.cache
def _settings_from_env() -> Settings:
    return Settings.from_env()


def _context(info: graphene.ResolveInfo) -> Mapping[str, Any]:
    context = info.context
    return context if isinstance(context, Mapping) else {}


def _settings(info: graphene.ResolveInfo) -> Settings:
    settings = _context(info).get("settings")
    return settings if settings is not None else _settings_from_env()


def _user(info: graphene.ResolveInfo) -> Mapping[str, Any] | None:
    user = _context(info).get("user")
    return user if isinstance(user, Mapping) else None


class Note(graphene.ObjectType):
    id = graphene.ID(required=True)
    title = graphene.String(required=True)
    description = graphene.String()
    priority = graphene.Int(required=True)
    created_by = graphene.String(required=True)
    created_at = graphene.String(
        required=True, description="ISO 8601 in UTC, e.g. 2026-11-21T20:30:00.123456Z."
    )


class ChatMessage(graphene.ObjectType):
    id = graphene.ID(required=True)
    chatroom = graphene.String(required=True)
    text = graphene.String(required=True)
    sender = graphene.String(required=True)
    sent_at = graphene.String(required=True, description="ISO 8601 in UTC.")


class Query(graphene.ObjectType):
    hello = graphene.String(required=True, args={"name": graphene.String()})
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
    @translate_db_errors
    async def resolve_note(
        root: object, info: graphene.ResolveInfo, id: str
    ) -> store.NoteRecord | None:
        return await store.get_note(_settings(info), parse_id(id, "id"))

    @staticmethod
    @translate_db_errors
    async def resolve_notes(
        root: object, info: graphene.ResolveInfo, first: int, after: str | None = None
    ) -> list[store.NoteRecord]:
        first = int_between(first, "first", 1, MAX_PAGE)
        after_id = 0 if after is None else parse_id(after, "after", minimum=0)
        return await store.list_notes(_settings(info), first=first, after=after_id)

    @staticmethod
    @translate_db_errors
    async def resolve_history(
        root: object, info: graphene.ResolveInfo, chatroom: str, last: int
    ) -> list[store.MessageRecord]:
        chatroom = checked_text(chatroom, "chatroom", MAX_CHATROOM_CHARS)
        last = int_between(last, "last", 1, MAX_PAGE)
        return await store.last_messages(_settings(info), chatroom, last)


class Mutation(graphene.ObjectType):
    # ``args=``: an argument named ``description`` would clash with Field's own keyword.
    create_note = graphene.Field(
        Note,
        required=True,
        args={
            "title": graphene.String(required=True),
            "description": graphene.String(),
            "priority": graphene.Int(description="0 to 10; 0 when omitted."),
        },
    )
    update_note = graphene.Field(
        Note,
        args={
            "id": graphene.ID(required=True),
            "title": graphene.String(),
            "description": graphene.String(),
            "priority": graphene.Int(),
        },
        description="Change the fields given: a null title or priority leaves it as it is, a "
        "null description clears it. Null when there is no such note.",
    )
    delete_note = graphene.Boolean(
        required=True,
        id=graphene.ID(required=True),
        description="True if the note existed.",
    )
    send_chat_message = graphene.Field(
        ChatMessage,
        required=True,
        chatroom=graphene.String(required=True),
        text=graphene.String(required=True),
    )

    @staticmethod
    @translate_db_errors
    async def resolve_create_note(
        root: object,
        info: graphene.ResolveInfo,
        title: str,
        description: str | None = None,
        priority: int | None = None,
    ) -> store.NoteRecord:
        title = checked_text(title, "title", MAX_TITLE_CHARS)
        priority = 0 if priority is None else int_between(priority, "priority", 0, 10)
        user = _user(info)
        note = await store.create_note(
            _settings(info),
            title=title,
            description=description,
            priority=priority,
            created_by=str(user["sub"]) if user else "anonymous",
        )
        await events.on_note_changed("created", note)
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_update_note(
        root: object, info: graphene.ResolveInfo, id: str, **fields: Any
    ) -> store.NoteRecord | None:
        note_id = parse_id(id, "id")
        changes: dict[str, object] = {}
        if fields.get("title") is not None:
            changes["title"] = checked_text(fields["title"], "title", MAX_TITLE_CHARS)
        if "description" in fields:
            changes["description"] = fields["description"]
        if fields.get("priority") is not None:
            changes["priority"] = int_between(fields["priority"], "priority", 0, 10)
        note = await store.update_note(_settings(info), note_id, changes)
        if note is not None and changes:
            await events.on_note_changed("updated", note)
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_delete_note(root: object, info: graphene.ResolveInfo, id: str) -> bool:
        note = await store.delete_note(_settings(info), parse_id(id, "id"))
        if note is None:
            return False
        await events.on_note_changed("deleted", note)
        return True

    @staticmethod
    @translate_db_errors
    async def resolve_send_chat_message(
        root: object, info: graphene.ResolveInfo, chatroom: str, text: str
    ) -> store.MessageRecord:
        chatroom = checked_text(chatroom, "chatroom", MAX_CHATROOM_CHARS)
        body = checked_text(text, "text", MAX_MESSAGE_CHARS)
        user = _user(info)
        sender = str(user.get("name") or user["sub"]) if user else "Anonymous"
        message = await store.add_message(
            _settings(info), chatroom=chatroom, text=body, sender=sender
        )
        await events.on_chat_message(message)
        return message


schema = graphene.Schema(query=Query, mutation=Mutation)
