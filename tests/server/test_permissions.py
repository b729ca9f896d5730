"""Who may do what in the example schema, against a real Postgres.

Reads are open to everyone. Creating a note needs a user; changing or deleting one needs its
author. Anonymous callers get ``UNAUTHENTICATED``, other users ``FORBIDDEN``, and a refused
change leaves the note exactly as it was and broadcasts nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from service.example import events
from service.example.schema import schema
from tests.example_util import data, run

ALICE = {"sub": "alice", "name": "Alice"}
BOB = {"sub": "bob"}

NOTE_FIELDS = "id title description priority createdBy createdAt"
CREATE = f"""
mutation($title: String!, $description: String) {{
  createNote(title: $title, description: $description) {{ {NOTE_FIELDS} }}
}}"""
UPDATE = f"""
mutation($id: ID!, $title: String, $description: String, $priority: Int) {{
  updateNote(id: $id, title: $title, description: $description, priority: $priority) {{
    {NOTE_FIELDS}
  }}
}}"""
DELETE = "mutation($id: ID!) { deleteNote(id: $id) }"
NOTE = f"query($id: ID!) {{ note(id: $id) {{ {NOTE_FIELDS} }} }}"
ME = "{ me { id name } }"


def refused(result: Any, code: str, field: str) -> str:
    """Assert ``result`` failed with exactly one ``code`` error at ``field``; return its message."""
    assert result.errors is not None and len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert error.extensions == {"code": code}
    assert error.path == [field]
    return str(error.message)


@pytest.fixture
def recorded_events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    async def on_note_changed(tx: Any, kind: str, note: Mapping[str, Any]) -> None:
        calls.append((kind, dict(note)))

    monkeypatch.setattr(events, "on_note_changed", on_note_changed)
    return calls


async def alices_note(url: str) -> dict[str, Any]:
    note: dict[str, Any] = (
        await data(url, CREATE, {"title": "mine", "description": "d"}, user=ALICE)
    )["createNote"]
    assert note["createdBy"] == "alice"
    return note


# --- me ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "me"),
    [
        (None, None),
        ({}, None),  # claims without a sub are nobody
        ({"sub": ""}, None),
        ({"sub": "alice", "name": "Alice"}, {"id": "alice", "name": "Alice"}),
        ({"sub": "bob"}, {"id": "bob", "name": "bob"}),
        ({"sub": "bob", "name": None}, {"id": "bob", "name": "bob"}),
        ({"sub": "bob", "name": "  "}, {"id": "bob", "name": "bob"}),
        ({"sub": "bob", "name": 7}, {"id": "bob", "name": "bob"}),
    ],
)
async def test_me(user: dict[str, Any] | None, me: dict[str, str] | None) -> None:
    result = await schema.execute_async(ME, context_value={"user": user})
    assert result.errors is None
    assert result.data == {"me": me}


async def test_me_without_a_dict_context_is_anonymous() -> None:
    result = await schema.execute_async(ME)
    assert result.errors is None and result.data == {"me": None}


# --- anonymous --------------------------------------------------------------------------------


async def test_anonymous_cannot_create(db_url: str, recorded_events: list[Any]) -> None:
    message = refused(await run(db_url, CREATE, {"title": "t"}), "UNAUTHENTICATED", "createNote")
    assert "createNote" in message and "Bearer" in message
    assert (await data(db_url, "{ notes { id } }"))["notes"] == []
    assert recorded_events == []


async def test_anonymous_cannot_update_or_delete(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    note = await alices_note(db_url)
    refused(
        await run(db_url, UPDATE, {"id": note["id"], "title": "hacked"}),
        "UNAUTHENTICATED",
        "updateNote",
    )
    refused(await run(db_url, DELETE, {"id": note["id"]}), "UNAUTHENTICATED", "deleteNote")
    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": note}
    assert [kind for kind, _ in recorded_events] == ["created"]


async def test_anonymous_is_unauthenticated_before_anything_else(db_url: str) -> None:
    # Neither a missing note nor a bad argument tells an anonymous caller anything.
    refused(await run(db_url, UPDATE, {"id": "999", "title": "x"}), "UNAUTHENTICATED", "updateNote")
    refused(await run(db_url, DELETE, {"id": "999"}), "UNAUTHENTICATED", "deleteNote")
    refused(await run(db_url, DELETE, {"id": "not-an-id"}), "UNAUTHENTICATED", "deleteNote")
    refused(await run(db_url, CREATE, {"title": ""}), "UNAUTHENTICATED", "createNote")


async def test_claims_without_a_sub_are_anonymous(db_url: str) -> None:
    refused(
        await run(db_url, CREATE, {"title": "t"}, user={"name": "no sub"}),
        "UNAUTHENTICATED",
        "createNote",
    )


async def test_anonymous_may_read(db_url: str) -> None:
    note = await alices_note(db_url)
    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": note}
    assert (await data(db_url, "{ notes { id } }"))["notes"] == [{"id": note["id"]}]


# --- other users ------------------------------------------------------------------------------


async def test_non_owner_cannot_update(db_url: str, recorded_events: list[tuple[str, Any]]) -> None:
    note = await alices_note(db_url)
    for variables in (
        {"id": note["id"], "title": "bob was here"},
        {"id": note["id"], "description": None, "priority": 9},
        {"id": note["id"]},  # even a no-op update is refused
    ):
        result = await run(db_url, UPDATE, variables, user=BOB)
        message = refused(result, "FORBIDDEN", "updateNote")
        assert message == f"Only the author of note {note['id']} may update it."
        assert result.data == {"updateNote": None}
    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": note}
    assert [kind for kind, _ in recorded_events] == ["created"]


async def test_non_owner_cannot_delete(db_url: str, recorded_events: list[tuple[str, Any]]) -> None:
    note = await alices_note(db_url)
    result = await run(db_url, DELETE, {"id": note["id"]}, user=BOB)
    message = refused(result, "FORBIDDEN", "deleteNote")
    assert message == f"Only the author of note {note['id']} may delete it."
    assert result.data is None  # deleteNote is Boolean!: the error nulls the whole result
    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": note}
    assert [kind for kind, _ in recorded_events] == ["created"]


async def test_same_name_other_sub_is_another_user(db_url: str) -> None:
    note = await alices_note(db_url)
    impostor = {"sub": "mallory", "name": "Alice"}
    refused(await run(db_url, DELETE, {"id": note["id"]}, user=impostor), "FORBIDDEN", "deleteNote")


async def test_missing_note_for_a_user_is_null_or_false(db_url: str) -> None:
    assert await data(db_url, UPDATE, {"id": "999", "title": "x"}, user=BOB) == {"updateNote": None}
    assert await data(db_url, UPDATE, {"id": "999"}, user=BOB) == {"updateNote": None}
    assert await data(db_url, DELETE, {"id": "999"}, user=BOB) == {"deleteNote": False}


# --- the author -------------------------------------------------------------------------------


async def test_author_may_update_and_delete(
    db_url: str, recorded_events: list[tuple[str, Any]]
) -> None:
    note = await alices_note(db_url)
    # The name is not what counts: the same sub with another name is still the author.
    renamed_alice = {"sub": "alice", "name": "Alice Liddell"}
    updated = (await data(db_url, UPDATE, {"id": note["id"], "title": "new"}, user=renamed_alice))[
        "updateNote"
    ]
    assert updated == {**note, "title": "new"}
    assert await data(db_url, DELETE, {"id": note["id"]}, user=ALICE) == {"deleteNote": True}
    assert await data(db_url, NOTE, {"id": note["id"]}) == {"note": None}
    assert [kind for kind, _ in recorded_events] == ["created", "updated", "deleted"]


async def test_each_user_owns_only_their_notes(db_url: str) -> None:
    mine = await alices_note(db_url)
    bobs = (await data(db_url, CREATE, {"title": "bob's"}, user=BOB))["createNote"]
    assert bobs["createdBy"] == "bob"
    refused(await run(db_url, DELETE, {"id": bobs["id"]}, user=ALICE), "FORBIDDEN", "deleteNote")
    assert await data(db_url, DELETE, {"id": bobs["id"]}, user=BOB) == {"deleteNote": True}
    assert await data(db_url, NOTE, {"id": mine["id"]}) == {"note": mine}


async def test_concurrent_updates_by_owner_and_others(db_url: str) -> None:
    """The ownership check and the write are one statement: whatever the interleaving, every
    other user is refused and only the author's writes land."""
    note = await alices_note(db_url)
    users = [ALICE if i % 2 == 0 else {"sub": f"user-{i}"} for i in range(12)]
    results = await asyncio.gather(
        *(
            run(db_url, UPDATE, {"id": note["id"], "priority": i % 10}, user=user)
            for i, user in enumerate(users)
        )
    )
    for i, (user, result) in enumerate(zip(users, results, strict=True)):
        if user is ALICE:
            assert result.errors is None
            assert result.data["updateNote"]["createdBy"] == "alice"
        else:
            assert result.errors is not None, i
            assert result.errors[0].extensions == {"code": "FORBIDDEN"}
    final = (await data(db_url, NOTE, {"id": note["id"]}))["note"]
    assert final["priority"] in {i % 10 for i, user in enumerate(users) if user is ALICE}
    assert final["createdBy"] == "alice"
