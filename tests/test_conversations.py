"""Direct conversations, my conversation list, one conversation; 404 for outsiders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink, problem
from whatschat import events

pytest_plugins = ["tests.messaging_fixtures"]


def test_open_direct_creates_once_and_tells_both_users(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    first = chat.call(alice, "POST", "/v1/conversations/direct", {"username": bob.username})
    assert first.status_code == 201
    body = first.get_json()
    assert body["kind"] == "direct" and body["last_seq"] == 0 and body["title"] is None
    assert body["peer"] == {
        "id": bob.id,
        "username": bob.username,
        "display_name": bob.username.title(),
    }
    assert sorted(m["user_id"] for m in body["members"]) == sorted([alice.id, bob.id])
    # Again, from either side and in any letter case: the same conversation, 200.
    again = chat.call(bob, "POST", "/v1/conversations/direct", {"username": alice.username.upper()})
    assert again.status_code == 200 and again.get_json()["id"] == body["id"]
    assert again.get_json()["peer"]["id"] == alice.id
    low, high = sorted((alice.id, bob.id))
    row = db.execute("SELECT direct_key FROM conversations WHERE id = %s", (body["id"],)).fetchone()
    assert row == (f"{low}:{high}",)
    assert events_seen.wait_for(2, "conversation.created")
    for user in (alice, bob):
        (event,) = events_seen.on(events.user_channel(user.id))
        assert event.type == "conversation.created" and event.seq is None
        assert event.data["conversation_id"] == body["id"] and event.data["joined_seq"] == 0
    assert len(events_seen.events("conversation.created")) == 2


def test_open_direct_refuses_unknown_users_and_yourself(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice = make_user()
    problem(chat.call(alice, "POST", "/v1/conversations/direct", {"username": "nobody_here"}), 404)
    problem(
        chat.call(alice, "POST", "/v1/conversations/direct", {"username": alice.username}),
        422,
        "validation-failed",
    )
    problem(chat.call(alice, "POST", "/v1/conversations/direct", {}), 422, "validation-failed")
    problem(chat.call(None, "POST", "/v1/conversations/direct", {"username": "x"}), 401)
    assert db.execute("SELECT count(*) FROM conversations").fetchone() == (0,)


def test_list_is_ordered_by_activity_with_last_message_and_unread(
    chat: Chat, make_user: Callable[..., AppUser]
) -> None:
    alice, bob, carol, dave = make_user(), make_user(), make_user(), make_user()
    with_bob = chat.direct(alice, bob)
    with_carol = chat.direct(alice, carol)
    chat.direct(bob, dave)  # not alice's
    chat.send(alice, with_carol, "first")
    chat.send(bob, with_bob, "one")
    chat.send(bob, with_bob, "two")
    listed = chat.ok(alice, "GET", "/v1/conversations")["conversations"]
    assert [c["id"] for c in listed] == [with_bob, with_carol]
    assert listed[0]["last_message"]["text"] == "two" and listed[0]["unread_count"] == 2
    # Alice's own message is not unread for her.
    assert listed[1]["last_message"]["text"] == "first" and listed[1]["unread_count"] == 0
    chat.ok(alice, "POST", "/v1/receipts", {"conversation_id": with_bob, "seq": 1})
    chat.send(alice, with_carol, "again")
    listed = chat.ok(alice, "GET", "/v1/conversations")["conversations"]
    assert [c["id"] for c in listed] == [with_carol, with_bob]
    assert listed[1]["unread_count"] == 1 and listed[1]["read_seq"] == 1


def test_get_shows_members_and_read_positions_to_members_only(
    chat: Chat, make_user: Callable[..., AppUser]
) -> None:
    alice, bob, eve = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    chat.send(alice, cid, "a")
    chat.send(alice, cid, "b")
    chat.ok(bob, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 1})
    detail = chat.ok(alice, "GET", f"/v1/conversations/{cid}")
    reads = {m["user_id"]: m["read_seq"] for m in detail["members"]}
    assert reads == {alice.id: 2, bob.id: 1}
    assert detail["membership"] == "member" and detail["role"] == "member"
    # An outsider cannot tell this conversation from one that does not exist.
    hidden = problem(chat.call(eve, "GET", f"/v1/conversations/{cid}"), 404, "not-found")
    missing = problem(chat.call(eve, "GET", f"/v1/conversations/{cid + 999}"), 404, "not-found")
    assert hidden.keys() == missing.keys()
    assert hidden["detail"].replace(str(cid), "N") == missing["detail"].replace(str(cid + 999), "N")
    problem(chat.call(alice, "GET", "/v1/conversations/abc"), 404)
    problem(chat.call(alice, "DELETE", f"/v1/conversations/{cid}"), 405, "method-not-allowed")
