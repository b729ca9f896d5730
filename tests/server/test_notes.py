"""The example schema end to end against a real Postgres: notes, chat, validation, outages.

Notes are written as the user ``ALICE`` (creating, changing and deleting notes needs a user; who
may do what is tested in ``tests/server/test_permissions.py``).
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping
from typing import Any

import pytest

from service.example import events
from service.example.schema import schema
from support.dbutil import unused_port
from tests.example_util import data, run

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
NOTE_FIELDS = "id title description priority createdBy createdAt"
MESSAGE_FIELDS = "id chatroom text sender sentAt"

CREATE = f"""
mutation($title: String!, $description: String, $priority: Int) {{
  createNote(title: $title, description: $description, priority: $priority) {{ {NOTE_FIELDS} }}
}}"""
UPDATE = f"""
mutation($id: ID!, $title: String, $description: String, $priority: Int) {{
  updateNote(id: $id, title: $title, description: $description, priority: $priority) {{
    {NOTE_FIELDS}
  }}
}}"""
DELETE = "mutation($id: ID!) { deleteNote(id: $id) }"
NOTE = f"query($id: ID!) {{ note(id: $id) {{ {NOTE_FIELDS} }} }}"
NOTES = "query($first: Int, $after: ID) { notes(first: $first, after: $after) { id title } }"
SEND = f"""
mutation($chatroom: String!, $text: String!) {{
  sendChatMessage(chatroom: $chatroom, text: $text) {{ {MESSAGE_FIELDS} }}
}}"""
HISTORY = f"""
query($chatroom: String!, $last: Int) {{
  history(chatroom: $chatroom, last: $last) {{ {MESSAGE_FIELDS} }}
}}"""

ALICE = {"sub": "alice", "name": "Alice"}


async def create(url: str, title: str = "a note", **variables: Any) -> dict[str, Any]:
    """Create a note as ``ALICE``."""
    result = await data(url, CREATE, {"title": title, **variables}, user=ALICE)
    note: dict[str, Any] = result["createNote"]
    return note


async def change(url: str, query: str, variables: Mapping[str, Any]) -> Any:
    """Run an update or delete as ``ALICE`` (the author of every note ``create`` makes)."""
    return await data(url, query, variables, user=ALICE)


@pytest.fixture
def recorded_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Replace the broadcast hooks with recorders."""
    calls: list[tuple[str, Any]] = []

    async def on_note_changed(tx: Any, kind: str, note: Mapping[str, Any]) -> None:
        calls.append((kind, dict(note)))

    async def on_chat_message(
        tx: Any, message: Mapping[str, Any], sender_sub: str | None = None
    ) -> None:
        calls.append(("chat", {**message, "sender_sub": sender_sub}))

    monkeypatch.setattr(events, "on_note_changed", on_note_changed)
    monkeypatch.setattr(events, "on_chat_message", on_chat_message)
    return calls


# --- hello ------------------------------------------------------------------------------------


async def test_hello() -> None:
    assert (await schema.execute_async("{ hello }")).data == {"hello": "Hello, world!"}
    result = await schema.execute_async('{ hello(name: "Ada") }')
    assert result.data == {"hello": "Hello, Ada!"}


def test_hello_resolves_synchronously() -> None:
    # The benchmark query must not need the event loop.
    result = schema.execute('{ hello(name: "sync") }')
    assert result.errors is None
    assert result.data == {"hello": "Hello, sync!"}


# --- notes ------------------------------------------------------------------------------------


async def test_create_with_defaults_then_read(db_url: str) -> None:
    before = datetime.datetime.now(datetime.UTC)
    note = await create(db_url, "groceries")
    assert note["title"] == "groceries"
    assert note["description"] is None
    assert note["priority"] == 0
    assert note["createdBy"] == "alice"
    assert ISO_UTC.fullmatch(note["createdAt"]), note["createdAt"]
    created = datetime.datetime.fromisoformat(note["createdAt"])
    assert created.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(minutes=1) < created < before + datetime.timedelta(minutes=1)

    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": note}


async def test_create_with_everything_and_a_user(db_url: str) -> None:
    note = await data(
        db_url,
        CREATE,
        {"title": "t", "description": "d", "priority": 10},
        user={"sub": "user-42", "name": "Ada"},
    )
    assert {k: v for k, v in note["createNote"].items() if k not in {"id", "createdAt"}} == {
        "title": "t",
        "description": "d",
        "priority": 10,
        "createdBy": "user-42",
    }


async def test_missing_note_is_null(db_url: str) -> None:
    assert await data(db_url, NOTE, {"id": "987654"}) == {"note": None}
    assert await data(db_url, NOTE, {"id": 5}) == {"note": None}  # ID accepts ints too


async def test_notes_paginate_by_id_cursor(db_url: str) -> None:
    ids = [(await create(db_url, f"n{i}"))["id"] for i in range(5)]
    assert [int(i) for i in ids] == sorted(int(i) for i in ids)

    page = (await data(db_url, NOTES, {"first": 2}))["notes"]
    assert [n["id"] for n in page] == ids[:2]
    page = (await data(db_url, NOTES, {"first": 2, "after": page[-1]["id"]}))["notes"]
    assert [n["id"] for n in page] == ids[2:4]
    page = (await data(db_url, NOTES, {"first": 2, "after": page[-1]["id"]}))["notes"]
    assert [n["id"] for n in page] == ids[4:]
    assert (await data(db_url, NOTES, {"after": ids[-1]}))["notes"] == []

    everything = (await data(db_url, "{ notes { id title } }"))["notes"]
    assert everything == [{"id": i, "title": f"n{n}"} for n, i in enumerate(ids)]


async def test_update_changes_only_what_is_given(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    note = await create(db_url, "old", description="desc", priority=3)
    updated = (await change(db_url, UPDATE, {"id": note["id"], "title": "new"}))["updateNote"]
    assert updated == {**note, "title": "new"}

    updated = (await change(db_url, UPDATE, {"id": note["id"], "priority": 7}))["updateNote"]
    assert updated == {**note, "title": "new", "priority": 7}

    # A null description clears it; null title and priority leave them alone.
    updated = (
        await change(
            db_url, UPDATE, {"id": note["id"], "description": None, "title": None, "priority": None}
        )
    )["updateNote"]
    assert updated == {**note, "title": "new", "priority": 7, "description": None}

    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": updated}
    assert [kind for kind, _ in recorded_events] == ["created", "updated", "updated", "updated"]


async def test_update_of_a_missing_note_is_null(db_url: str) -> None:
    assert await change(db_url, UPDATE, {"id": "424242", "title": "x"}) == {"updateNote": None}
    assert await change(db_url, UPDATE, {"id": "424242"}) == {"updateNote": None}


async def test_update_without_changes_returns_the_note_and_broadcasts_nothing(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    note = await create(db_url, "same")
    assert await change(db_url, UPDATE, {"id": note["id"]}) == {"updateNote": note}
    assert [kind for kind, _ in recorded_events] == ["created"]


async def test_delete(db_url: str, recorded_events: list[tuple[str, Any]]) -> None:
    keep = await create(db_url, "keep")
    drop = await create(db_url, "drop")
    assert await change(db_url, DELETE, {"id": drop["id"]}) == {"deleteNote": True}
    assert await change(db_url, DELETE, {"id": drop["id"]}) == {"deleteNote": False}
    assert await data(db_url, NOTE, {"id": drop["id"]}) == {"note": None}
    assert (await data(db_url, NOTES))["notes"] == [{"id": keep["id"], "title": "keep"}]
    assert recorded_events[-1][0] == "deleted"
    assert recorded_events[-1][1]["title"] == "drop"
    assert len(recorded_events) == 3  # two creations, one deletion


async def test_note_events_carry_the_stored_note(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    note = await create(db_url, "evented", priority=2)
    [(kind, payload)] = recorded_events
    assert kind == "created"
    assert payload == {
        "id": int(note["id"]),
        "title": "evented",
        "description": None,
        "priority": 2,
        "created_by": "alice",
        "created_at": note["createdAt"],
    }


# --- validation -------------------------------------------------------------------------------

BAD_INPUT = [
    pytest.param(CREATE, {"title": ""}, "title", id="create-empty-title"),
    pytest.param(CREATE, {"title": "   "}, "title", id="create-blank-title"),
    pytest.param(CREATE, {"title": "x" * 201}, "title", id="create-long-title"),
    pytest.param(CREATE, {"title": "t", "priority": -1}, "priority", id="create-priority-low"),
    pytest.param(CREATE, {"title": "t", "priority": 11}, "priority", id="create-priority-high"),
    pytest.param(NOTE, {"id": "abc"}, "id", id="note-id-letters"),
    pytest.param(NOTE, {"id": "1.5"}, "id", id="note-id-fraction"),
    pytest.param(NOTE, {"id": "-3"}, "id", id="note-id-negative"),
    pytest.param(NOTE, {"id": "9" * 30}, "id", id="note-id-beyond-bigint"),
    pytest.param(UPDATE, {"id": "x", "title": "t"}, "id", id="update-bad-id"),
    pytest.param(UPDATE, {"id": "1", "title": ""}, "title", id="update-empty-title"),
    pytest.param(UPDATE, {"id": "1", "title": "y" * 201}, "title", id="update-long-title"),
    pytest.param(UPDATE, {"id": "1", "priority": 11}, "priority", id="update-priority"),
    pytest.param(DELETE, {"id": "two"}, "id", id="delete-bad-id"),
    pytest.param(NOTES, {"first": 0}, "first", id="notes-first-zero"),
    pytest.param(NOTES, {"first": 101}, "first", id="notes-first-too-big"),
    pytest.param(NOTES, {"first": None}, "first", id="notes-first-null"),
    pytest.param(NOTES, {"after": "later"}, "after", id="notes-bad-cursor"),
    pytest.param(SEND, {"chatroom": "r", "text": ""}, "text", id="send-empty-text"),
    pytest.param(SEND, {"chatroom": "r", "text": "z" * 2001}, "text", id="send-long-text"),
    pytest.param(SEND, {"chatroom": "", "text": "hi"}, "chatroom", id="send-empty-room"),
    pytest.param(SEND, {"chatroom": "r" * 101, "text": "hi"}, "chatroom", id="send-long-room"),
    pytest.param(HISTORY, {"chatroom": ""}, "chatroom", id="history-empty-room"),
    pytest.param(HISTORY, {"chatroom": "r" * 101}, "chatroom", id="history-long-room"),
    pytest.param(HISTORY, {"chatroom": "r", "last": 0}, "last", id="history-last-zero"),
    pytest.param(HISTORY, {"chatroom": "r", "last": 101}, "last", id="history-last-too-big"),
    # Postgres text cannot hold U+0000: the client's bad input, not a driver error (a 500).
    pytest.param(HISTORY, {"chatroom": "a\u0000b"}, "chatroom", id="history-chatroom-nul"),
    pytest.param(SEND, {"chatroom": "r", "text": "a\u0000b"}, "text", id="send-text-nul"),
    pytest.param(SEND, {"chatroom": "r\u0000", "text": "t"}, "chatroom", id="send-chatroom-nul"),
    pytest.param(CREATE, {"title": "t\u0000"}, "title", id="create-title-nul"),
    pytest.param(
        CREATE, {"title": "t", "description": "\u0000"}, "description", id="create-description-nul"
    ),
]


@pytest.mark.parametrize(("query", "variables", "argument"), BAD_INPUT)
async def test_bad_input_names_the_argument(
    db_url: str,
    recorded_events: list[tuple[str, Any]],
    query: str,
    variables: dict[str, Any],
    argument: str,
) -> None:
    result = await run(db_url, query, variables, user=ALICE)
    assert result.errors is not None and len(result.errors) == 1
    error = result.errors[0]
    assert error.extensions == {"code": "BAD_USER_INPUT", "argument": argument}
    assert f"'{argument}'" in error.message
    assert error.original_error is None or not isinstance(error.original_error, TypeError)
    assert recorded_events == []
    # Nothing was written.
    assert (await data(db_url, NOTES))["notes"] == []


async def test_limits_themselves_are_accepted(db_url: str) -> None:
    note = await create(db_url, "x" * 200, priority=0)
    assert len(note["title"]) == 200
    await create(db_url, "t", priority=10)
    assert len((await data(db_url, NOTES, {"first": 100}))["notes"]) == 2
    assert len((await data(db_url, NOTES, {"first": 1}))["notes"]) == 1
    room = "r" * 100
    sent = await data(db_url, SEND, {"chatroom": room, "text": "z" * 2000})
    assert len(sent["sendChatMessage"]["text"]) == 2000
    history = await data(db_url, HISTORY, {"chatroom": room, "last": 100})
    assert len(history["history"]) == 1


# --- chat -------------------------------------------------------------------------------------


async def test_chat_history_is_chronological_and_per_room(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    sent = [
        (await data(db_url, SEND, {"chatroom": "lobby", "text": f"m{i}"}))["sendChatMessage"]
        for i in range(5)
    ]
    await data(db_url, SEND, {"chatroom": "elsewhere", "text": "other"})

    history = (await data(db_url, HISTORY, {"chatroom": "lobby"}))["history"]
    assert history == sent
    assert [m["text"] for m in history] == ["m0", "m1", "m2", "m3", "m4"]
    last_two = (await data(db_url, HISTORY, {"chatroom": "lobby", "last": 2}))["history"]
    assert [m["text"] for m in last_two] == ["m3", "m4"]
    assert (await data(db_url, HISTORY, {"chatroom": "empty"}))["history"] == []

    message = sent[0]
    assert message["chatroom"] == "lobby"
    assert message["sender"] == "Anonymous"
    assert ISO_UTC.fullmatch(message["sentAt"]), message["sentAt"]
    assert [kind for kind, _ in recorded_events] == ["chat"] * 6
    assert recorded_events[0][1]["text"] == "m0"
    assert recorded_events[0][1]["sender_sub"] is None  # anonymous: delivered to everyone


@pytest.mark.parametrize(
    ("user", "sender", "sender_sub"),
    [
        (None, "Anonymous", None),
        ({"sub": "user-7"}, "user-7", "user-7"),
        ({"sub": "user-7", "name": None}, "user-7", "user-7"),
        ({"sub": "user-7", "name": ""}, "user-7", "user-7"),
        ({"sub": "user-7", "name": "Grace"}, "Grace", "user-7"),
    ],
)
async def test_chat_sender_comes_from_the_user(
    db_url: str,
    recorded_events: list[tuple[str, Any]],
    user: dict[str, Any] | None,
    sender: str,
    sender_sub: str | None,
) -> None:
    result = await data(db_url, SEND, {"chatroom": "r", "text": "hi"}, user=user)
    assert result["sendChatMessage"]["sender"] == sender
    # The event names the sender's sub, so their own subscription can skip it.
    [(kind, payload)] = recorded_events
    assert kind == "chat" and payload["sender_sub"] == sender_sub


# --- outages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (CREATE, {"title": "t"}),
        (UPDATE, {"id": "1", "title": "t"}),
        (DELETE, {"id": "1"}),
        (NOTE, {"id": "1"}),
        (NOTES, {}),
        (SEND, {"chatroom": "r", "text": "hi"}),
        (HISTORY, {"chatroom": "r"}),
    ],
)
async def test_database_down_is_service_unavailable_and_fast(
    query: str, variables: dict[str, Any]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{unused_port()}/nothing"
    started = time.monotonic()
    result = await run(url, query, variables, user=ALICE)
    assert time.monotonic() - started < 5.0  # a hang guard
    assert result.errors is not None and len(result.errors) == 1
    assert result.errors[0].message == "database unavailable"
    assert result.errors[0].extensions == {"code": "SERVICE_UNAVAILABLE"}


@pytest.mark.parametrize("context", [None, {"user": ALICE}, {"db": "not a Database"}])
async def test_a_context_without_a_database_names_the_missing_key(context: Any) -> None:
    result = await schema.execute_async(NOTES, context_value=context)
    assert result.errors is not None and len(result.errors) == 1
    message = result.errors[0].message
    assert "'notes' needs a service.db.Database" in message and "'db'" in message
    # Fields that need no database still work with such a context.
    assert (await schema.execute_async("{ hello }", context_value=context)).data == {
        "hello": "Hello, world!"
    }
