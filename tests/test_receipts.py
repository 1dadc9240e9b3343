"""POST /v1/receipts: read positions move forward only, are clamped, and are evented."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink, problem
from whatschat import events

pytest_plugins = ["tests.messaging_fixtures"]


def test_read_positions_move_forward_only_and_reach_the_other_members(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for _ in range(3):
        chat.send(alice, cid)
    assert chat.ok(bob, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 2}) == {
        "conversation_id": cid,
        "user_id": bob.id,
        "read_seq": 2,
    }
    # Backwards: no change, no event.
    assert chat.ok(bob, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 1})["read_seq"] == 2
    # Beyond the last message: clamped to it.
    assert (
        chat.ok(bob, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 99})["read_seq"] == 3
    )
    assert events_seen.wait_for(2, "read.updated")
    read_events = [
        e for e in events_seen.on(events.conversation_channel(cid)) if e.type == "read.updated"
    ]
    assert [(e.seq, e.data) for e in read_events] == [
        (None, {"conversation_id": cid, "user_id": bob.id, "read_seq": 2}),
        (None, {"conversation_id": cid, "user_id": bob.id, "read_seq": 3}),
    ]
    members = chat.ok(alice, "GET", f"/v1/conversations/{cid}")["members"]
    assert {m["user_id"]: m["read_seq"] for m in members}[bob.id] == 3
    assert db.execute(
        "SELECT read_seq FROM members WHERE conversation_id = %s AND user_id = %s", (cid, bob.id)
    ).fetchone() == (3,)


def test_outsiders_and_bad_bodies_change_nothing(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob, eve = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    chat.send(alice, cid)
    gid = chat.group(alice, [eve])
    chat.ok(alice, "DELETE", f"/v1/groups/{gid}/members/{eve.id}")
    before = db.execute("SELECT * FROM members ORDER BY conversation_id, user_id").fetchall()
    outbox = db.execute("SELECT count(*) FROM outbox").fetchone()
    problem(chat.call(eve, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 1}), 404)
    problem(chat.call(eve, "POST", "/v1/receipts", {"conversation_id": gid, "seq": 3}), 403)
    for body in ({"conversation_id": cid}, {"conversation_id": cid, "seq": -1}, {"seq": 1}):
        problem(chat.call(bob, "POST", "/v1/receipts", body), 422, "validation-failed")
    problem(chat.call(bob, "POST", "/v1/receipts", "x"), 422)
    bad_json = chat.call(
        bob, "POST", "/v1/receipts", None, headers={"Content-Type": "application/json"}
    )
    problem(bad_json, 400, "malformed-request")
    assert (
        db.execute("SELECT * FROM members ORDER BY conversation_id, user_id").fetchall() == before
    )
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == outbox
