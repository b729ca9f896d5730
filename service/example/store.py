"""Notes and chat messages in Postgres. Rows become plain dicts here and nowhere else.

The dicts are ready for JSON (ids are ints, times are ISO 8601 strings), so the same value can
be returned by a resolver and broadcast to subscribers. Each function takes the ``Database`` to
use first and raises ``DatabaseUnavailable`` when Postgres cannot answer; arguments are assumed
valid (the schema checks them). Only a note's
author may change or delete it: ``update_note`` and ``delete_note`` take the caller as ``owner``
and raise ``NotOwner`` for someone else's note.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypedDict

from service.db import Database, Transaction

#: Where a statement runs: the pool (one statement each) or an open transaction.
Statements = Database | Transaction


class NoteRecord(TypedDict):
    id: int
    title: str
    description: str | None
    priority: int
    created_by: str
    created_at: str


class MessageRecord(TypedDict):
    id: int
    chatroom: str
    text: str
    sender: str
    sent_at: str


NOTE_COLUMNS = "id, title, description, priority, created_by, created_at"
MESSAGE_COLUMNS = "id, chatroom, text, sender, sent_at"
# Columns updateNote may change, mapped to their SET clause (never built from input).
_NOTE_UPDATES = {
    "title": "title = %s",
    "description": "description = %s",
    "priority": "priority = %s",
}


def iso_utc(moment: datetime.datetime) -> str:
    """``2026-11-21T20:30:00.123456Z``: UTC, always with microseconds."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def note_from_row(row: tuple[Any, ...]) -> NoteRecord:
    """A row selected as ``NOTE_COLUMNS``."""
    id_, title, description, priority, created_by, created_at = row
    return NoteRecord(
        id=id_,
        title=title,
        description=description,
        priority=priority,
        created_by=created_by,
        created_at=iso_utc(created_at),
    )


def message_from_row(row: tuple[Any, ...]) -> MessageRecord:
    """A row selected as ``MESSAGE_COLUMNS``."""
    id_, chatroom, text, sender, sent_at = row
    return MessageRecord(
        id=id_, chatroom=chatroom, text=text, sender=sender, sent_at=iso_utc(sent_at)
    )


def _one(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    if row is None:  # INSERT ... RETURNING always returns its row
        raise RuntimeError("INSERT returned no row")
    return row


async def create_note(
    db: Statements, *, title: str, description: str | None, priority: int, created_by: str
) -> NoteRecord:
    row = await db.fetchone(
        f"INSERT INTO notes (title, description, priority, created_by) VALUES (%s, %s, %s, %s)"
        f" RETURNING {NOTE_COLUMNS}",
        (title, description, priority, created_by),
    )
    return note_from_row(_one(row))


async def get_note(db: Statements, note_id: int) -> NoteRecord | None:
    row = await db.fetchone(f"SELECT {NOTE_COLUMNS} FROM notes WHERE id = %s", (note_id,))
    return None if row is None else note_from_row(row)


async def list_notes(db: Statements, *, first: int, after: int) -> list[NoteRecord]:
    """Up to ``first`` notes with ids above ``after``, by id."""
    rows = await db.fetch(
        f"SELECT {NOTE_COLUMNS} FROM notes WHERE id > %s ORDER BY id LIMIT %s",
        (after, first),
    )
    return [note_from_row(row) for row in rows]


class NotOwner(Exception):
    """The note exists but was created by someone else: the change was not made."""

    def __init__(self, note_id: int) -> None:
        super().__init__(f"note {note_id} belongs to another user")
        self.note_id = note_id


async def _refuse_or_missing(db: Statements, note_id: int) -> None:
    """After a change guarded by ``created_by`` touched no row: raise ``NotOwner`` when the
    note exists (then it is someone else's, as ``created_by`` never changes), else return."""
    row = await db.fetchone("SELECT 1 FROM notes WHERE id = %s", (note_id,))
    if row is not None:
        raise NotOwner(note_id)


async def update_note(
    db: Statements, note_id: int, changes: Mapping[str, object], *, owner: str
) -> NoteRecord | None:
    """Set the columns in ``changes`` (keys of ``_NOTE_UPDATES``) of ``owner``'s note.

    Returns the note as stored, or None if there is no such note. Raises ``NotOwner`` if the
    note was created by someone else. The ownership check and the change are one statement
    (``WHERE id = %s AND created_by = %s``), so no concurrent request slips between them.
    """
    if not changes:
        note = await get_note(db, note_id)
        if note is not None and note["created_by"] != owner:
            raise NotOwner(note_id)
        return note
    assignments = ", ".join(_NOTE_UPDATES[column] for column in changes)
    row = await db.fetchone(
        f"UPDATE notes SET {assignments} WHERE id = %s AND created_by = %s"
        f" RETURNING {NOTE_COLUMNS}",
        (*changes.values(), note_id, owner),
    )
    if row is None:
        await _refuse_or_missing(db, note_id)
        return None
    return note_from_row(row)


async def delete_note(db: Statements, note_id: int, *, owner: str) -> NoteRecord | None:
    """Delete ``owner``'s note and return what it was, or None if there was no such note.

    Raises ``NotOwner`` (and deletes nothing) if the note was created by someone else; the
    check and the deletion are one statement, as in ``update_note``.
    """
    row = await db.fetchone(
        f"DELETE FROM notes WHERE id = %s AND created_by = %s RETURNING {NOTE_COLUMNS}",
        (note_id, owner),
    )
    if row is None:
        await _refuse_or_missing(db, note_id)
        return None
    return note_from_row(row)


async def add_message(db: Statements, *, chatroom: str, text: str, sender: str) -> MessageRecord:
    row = await db.fetchone(
        f"INSERT INTO chat_messages (chatroom, text, sender) VALUES (%s, %s, %s)"
        f" RETURNING {MESSAGE_COLUMNS}",
        (chatroom, text, sender),
    )
    return message_from_row(_one(row))


async def last_messages(db: Statements, chatroom: str, last: int) -> list[MessageRecord]:
    """The ``last`` most recent messages of ``chatroom``, oldest first."""
    rows = await db.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM ("
        f" SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE chatroom = %s"
        f" ORDER BY id DESC LIMIT %s) AS recent ORDER BY id",
        (chatroom, last),
    )
    return [message_from_row(row) for row in rows]
