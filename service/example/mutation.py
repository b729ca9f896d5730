"""The example schema's mutations: notes (create, update, delete) and ``sendChatMessage``.

Each checks its arguments, then, in one transaction, changes the data through ``store`` and
records the matching event through ``events`` (through the module, so tests can replace the
hooks): the change and its announcement commit together.
"""

from __future__ import annotations

from typing import Any

import graphene

from service.example import events, store
from service.example.context import database, display_name, require_user, user
from service.example.errors import forbidden, translate_db_errors
from service.example.inputs import (
    MAX_CHATROOM_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_TITLE_CHARS,
    int_between,
    optional_text,
    parse_id,
)
from service.example.inputs import text as checked_text
from service.example.types import ChatMessage, Note


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
        author = require_user(info)
        title = checked_text(title, "title", MAX_TITLE_CHARS)
        priority = 0 if priority is None else int_between(priority, "priority", 0, 10)
        async with database(info).transaction() as tx:
            note = await store.create_note(
                tx,
                title=title,
                description=optional_text(description, "description"),
                priority=priority,
                created_by=author,
            )
            await events.on_note_changed(tx, "created", note)
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_update_note(
        root: object, info: graphene.ResolveInfo, id: str, **fields: Any
    ) -> store.NoteRecord | None:
        caller = require_user(info)
        note_id = parse_id(id, "id")
        changes: dict[str, object] = {}
        if fields.get("title") is not None:
            changes["title"] = checked_text(fields["title"], "title", MAX_TITLE_CHARS)
        if "description" in fields:
            changes["description"] = optional_text(fields["description"], "description")
        if fields.get("priority") is not None:
            changes["priority"] = int_between(fields["priority"], "priority", 0, 10)
        try:
            async with database(info).transaction() as tx:
                note = await store.update_note(tx, note_id, changes, owner=caller)
                if note is not None and changes:
                    await events.on_note_changed(tx, "updated", note)
        except store.NotOwner:
            raise forbidden(f"Only the author of note {note_id} may update it.") from None
        return note

    @staticmethod
    @translate_db_errors
    async def resolve_delete_note(root: object, info: graphene.ResolveInfo, id: str) -> bool:
        caller = require_user(info)
        note_id = parse_id(id, "id")
        try:
            async with database(info).transaction() as tx:
                note = await store.delete_note(tx, note_id, owner=caller)
                if note is not None:
                    await events.on_note_changed(tx, "deleted", note)
        except store.NotOwner:
            raise forbidden(f"Only the author of note {note_id} may delete it.") from None
        return note is not None

    @staticmethod
    @translate_db_errors
    async def resolve_send_chat_message(
        root: object, info: graphene.ResolveInfo, chatroom: str, text: str
    ) -> store.MessageRecord:
        chatroom = checked_text(chatroom, "chatroom", MAX_CHATROOM_CHARS)
        body = checked_text(text, "text", MAX_MESSAGE_CHARS)
        claims = user(info)
        sender = display_name(claims) if claims else "Anonymous"
        async with database(info).transaction() as tx:
            message = await store.add_message(tx, chatroom=chatroom, text=body, sender=sender)
            await events.on_chat_message(tx, message, str(claims["sub"]) if claims else None)
        return message
