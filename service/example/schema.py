"""The example schema: notes (CRUD with an id cursor) and chat messages (send, history).

Resolvers check their arguments (``BAD_USER_INPUT`` naming the argument), call ``store``, and
after each successful change call the matching hook in ``events``. The GraphQL context is a dict:
``settings`` (a ``Settings``; read from the environment when absent) and ``user`` (None, or the
JWT claims with ``sub`` and optionally ``name``).

Permissions: anyone may read. ``createNote`` needs a user (``UNAUTHENTICATED`` otherwise) and
records its ``sub`` as ``createdBy``; ``updateNote`` and ``deleteNote`` also need a user, and only
the note's author may use them on it (``FORBIDDEN`` for anyone else). ``sendChatMessage`` is open
to everyone; the sender is the user's name, else their ``sub``, else ``Anonymous``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import graphene

from service.example import events, store
from service.example.errors import forbidden, translate_db_errors, unauthenticated
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
    """The verified claims of the caller, or None when anonymous (no usable ``sub``)."""
    user = _context(info).get("user")
    if not isinstance(user, Mapping):
        return None
    sub = user.get("sub")
    return user if isinstance(sub, str) and sub.strip() else None


def _require_user(info: graphene.ResolveInfo) -> str:
    """The caller's ``sub``; ``UNAUTHENTICATED`` naming this field when anonymous."""
    user = _user(info)
    if user is None:
        raise unauthenticated(info.field_name)
    return str(user["sub"])


def _display_name(user: Mapping[str, Any]) -> str:
    """The ``name`` claim when it is a non-blank string, else the ``sub``."""
    name = user.get("name")
    return name if isinstance(name, str) and name.strip() else str(user["sub"])


class User(graphene.ObjectType):
    """The signed-in user, from the token's claims."""

    id = graphene.ID(required=True, description="The token's ``sub`` claim.")
    name = graphene.String(
        required=True, description="The token's ``name`` claim, or ``sub`` without one."
    )


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
    def resolve_me(root: object, info: graphene.ResolveInfo) -> dict[str, str] | None:
        user = _user(info)
        if user is None:
            return None
        return {"id": str(user["sub"]), "name": _display_name(user)}

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
        description="Needs a signed-in user, recorded as ``createdBy``.",
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
        "null description clears it. Null when there is no such note. Only the note's author "
        "may change it.",
    )
    delete_note = graphene.Boolean(
        required=True,
        id=graphene.ID(required=True),
        description="True if the note existed. Only the note's author may delete it.",
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
        author = _require_user(info)
        title = checked_text(title, "title", MAX_TITLE_CHARS)
        priority = 0 if priority is None else int_between(priority, "priority", 0, 10)
        note = await store.create_note(
            _settings(info),
            title=title,
            description=description,
            priority=priority,
            created_by=author,
        )
        await events.on_note_changed("created", note)
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_update_note(
        root: object, info: graphene.ResolveInfo, id: str, **fields: Any
    ) -> store.NoteRecord | None:
        caller = _require_user(info)
        note_id = parse_id(id, "id")
        changes: dict[str, object] = {}
        if fields.get("title") is not None:
            changes["title"] = checked_text(fields["title"], "title", MAX_TITLE_CHARS)
        if "description" in fields:
            changes["description"] = fields["description"]
        if fields.get("priority") is not None:
            changes["priority"] = int_between(fields["priority"], "priority", 0, 10)
        try:
            note = await store.update_note(_settings(info), note_id, changes, owner=caller)
        except store.NotOwner:
            raise forbidden(f"Only the author of note {note_id} may update it.") from None
        if note is not None and changes:
            await events.on_note_changed("updated", note)
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_delete_note(root: object, info: graphene.ResolveInfo, id: str) -> bool:
        caller = _require_user(info)
        note_id = parse_id(id, "id")
        try:
            note = await store.delete_note(_settings(info), note_id, owner=caller)
        except store.NotOwner:
            raise forbidden(f"Only the author of note {note_id} may delete it.") from None
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
        sender = _display_name(user) if user else "Anonymous"
        message = await store.add_message(
            _settings(info), chatroom=chatroom, text=body, sender=sender
        )
        await events.on_chat_message(message, str(user["sub"]) if user else None)
        return message


def _build_schema() -> graphene.Schema:
    from service.example.subscriptions import Subscriptions

    return graphene.Schema(query=Query, mutation=Mutation, subscription=Subscriptions)


schema = _build_schema()
