"""PATCH/DELETE /v1/messages/{conversation_id}/{seq}: edit and delete your own messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink, problem

pytest_plugins = ["tests.messaging_fixtures"]


def test_edit_then_delete_keep_the_seq_and_take_edit_seqs(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    sent = chat.send(alice, cid, "helo")
    chat.send(bob, cid, "?")
    edited = chat.ok(alice, "PATCH", f"/v1/messages/{cid}/1", {"text": "hello"})
    assert edited["seq"] == 1 and edited["id"] == sent["id"] and edited["text"] == "hello"
    assert edited["edited_at"] is not None and edited["deleted"] is False
    deleted = chat.ok(alice, "DELETE", f"/v1/messages/{cid}/1")
    assert deleted["deleted"] is True and deleted["text"] is None and deleted["seq"] == 1
    row = db.execute(
        "SELECT body, deleted_at IS NOT NULL, edit_seq FROM messages"
        " WHERE conversation_id = %s AND seq = 1",
        (cid,),
    ).fetchone()
    assert row == (None, True, 2)  # the text is gone from the database too
    assert db.execute(
        "SELECT last_seq, last_edit_seq FROM conversations WHERE id = %s", (cid,)
    ).fetchone() == (2, 2)
    assert events_seen.wait_for(1, "message.deleted")
    edit_event = events_seen.events("message.edited")[0]
    assert edit_event.seq is None and edit_event.conversation_id == cid
    assert edit_event.data["seq"] == 1 and edit_event.data["edit_seq"] == 1
    assert edit_event.data["message"] == edited
    delete_event = events_seen.events("message.deleted")[0]
    assert delete_event.data["edit_seq"] == 2 and delete_event.data["message"]["deleted"] is True
    # Deleting again changes nothing and publishes nothing.
    assert chat.ok(alice, "DELETE", f"/v1/messages/{cid}/1") == deleted
    problem(chat.call(alice, "PATCH", f"/v1/messages/{cid}/1", {"text": "back"}), 409, "conflict")
    assert db.execute(
        "SELECT last_edit_seq FROM conversations WHERE id = %s", (cid,)
    ).fetchone() == (2,)
    assert len(events_seen.events("message.deleted")) == 1


def test_only_the_sender_edits_and_outsiders_see_nothing(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob, eve = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    chat.send(alice, cid, "mine")
    group = chat.group(alice, [bob])
    snapshot = db.execute("SELECT id, body, edit_seq FROM messages ORDER BY id").fetchall()
    problem(chat.call(bob, "PATCH", f"/v1/messages/{cid}/1", {"text": "x"}), 403, "forbidden")
    problem(chat.call(bob, "DELETE", f"/v1/messages/{cid}/1"), 403, "forbidden")
    # A system message has no sender: nobody edits it.
    problem(chat.call(alice, "PATCH", f"/v1/messages/{group}/1", {"text": "x"}), 403, "forbidden")
    problem(chat.call(eve, "PATCH", f"/v1/messages/{cid}/1", {"text": "x"}), 404, "not-found")
    problem(chat.call(eve, "DELETE", f"/v1/messages/{cid}/1"), 404, "not-found")
    problem(chat.call(alice, "PATCH", f"/v1/messages/{cid}/9", {"text": "x"}), 404, "not-found")
    problem(chat.call(alice, "PATCH", f"/v1/messages/{cid}/1", {"text": " "}), 422)
    problem(chat.call(alice, "PATCH", f"/v1/messages/{cid}/1", {"txt": "x"}), 422)
    problem(chat.call(alice, "PATCH", f"/v1/messages/{cid}/1", [1]), 422)
    problem(chat.call(alice, "POST", f"/v1/messages/{cid}/1", {"text": "x"}), 405)
    assert db.execute("SELECT id, body, edit_seq FROM messages ORDER BY id").fetchall() == snapshot
    assert db.execute("SELECT sum(last_edit_seq) FROM conversations").fetchone() == (0,)
