"""The example schema's object types, shared by its queries, mutations and subscriptions.

Resolvers return the plain dicts of ``store`` (``NoteRecord``, ``MessageRecord``); graphene's
default resolver reads these types' fields from them by key.
"""

from __future__ import annotations

import graphene


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


class NoteEventKind(graphene.Enum):
    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DELETED = "DELETED"


class NoteEvent(graphene.ObjectType):
    """A note was created, updated or deleted; ``note`` is its stored state (or last state)."""

    kind = NoteEventKind(required=True)
    note = graphene.Field(Note, required=True)
