"""Groups: create, update, add/remove, roles, leave and the last-admin rule; events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink, problem
from whatschat import events
from whatschat.config import get_settings

pytest_plugins = ["tests.messaging_fixtures"]


def _state(db: Any) -> tuple[Any, ...]:
    return tuple(
        db.execute(sql).fetchall()
        for sql in (
            "SELECT id, title, description, last_seq FROM conversations ORDER BY id",
            "SELECT * FROM members ORDER BY conversation_id, user_id",
            "SELECT count(*) FROM messages",
            "SELECT count(*) FROM outbox",
        )
    )


def test_create_is_one_transaction_with_a_system_message_and_events(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink
) -> None:
    admin, bob, carol = make_user(), make_user(), make_user()
    response = chat.call(
        admin,
        "POST",
        "/v1/groups",
        {
            "title": "  Trip  ",
            "description": "planning",
            "member_ids": [bob.id, admin.id],
            "usernames": [carol.username.upper()],
        },
    )
    assert response.status_code == 201
    group = response.get_json()
    gid = group["id"]
    assert group["kind"] == "group" and group["title"] == "Trip" and group["last_seq"] == 1
    assert group["role"] == "admin" and group["unread_count"] == 0
    roles = {m["user_id"]: m["role"] for m in group["members"]}
    assert roles == {admin.id: "admin", bob.id: "member", carol.id: "member"}
    created = group["last_message"]
    assert created["seq"] == 1 and created["kind"] == "system" and created["sender_id"] is None
    assert created["system"]["type"] == "group.created"
    assert sorted(created["system"]["member_ids"]) == sorted([admin.id, bob.id, carol.id])
    assert events_seen.wait_for(4)
    (group_event,) = events_seen.on(events.conversation_channel(gid))
    assert group_event.type == "group.created" and group_event.seq == 1
    assert group_event.data["message"] == created
    for user, role in ((admin, "admin"), (bob, "member"), (carol, "member")):
        (personal,) = events_seen.on(events.user_channel(user.id))
        assert personal.type == "member.added" and personal.seq is None
        assert personal.data == {
            "conversation_id": gid,
            "user_id": user.id,
            "role": role,
            "seq": 1,
            "joined_seq": 0,
            "actor_id": admin.id,
        }
    # Bob sees the group and its creation message.
    assert chat.history(bob, gid)["messages"][0]["seq"] == 1


@pytest.fixture
def groups_of_three(settings: Callable[..., None]) -> None:
    settings(MAX_GROUP_MEMBERS="3")


def test_bad_creates_write_nothing(
    chat: Chat, make_user: Callable[..., AppUser], db: Any, groups_of_three: None
) -> None:
    admin, a, b, c = make_user(), make_user(), make_user(), make_user()
    before = _state(db)
    for body in (
        {"title": "x", "member_ids": [a.id, b.id, c.id]},  # 4 with the creator
        {"title": "x", "member_ids": [a.id, 999_999]},
        {"title": "x", "usernames": ["no_such_user"]},
        {"title": "   "},
        {"title": "x" * 101},
        {"title": "x", "description": "d" * 501},
        {"title": "x", "member_ids": [0]},
        {"title": "x", "member_ids": "1,2"},
        {"title": "x", "owner": 1},
    ):
        problem(chat.call(admin, "POST", "/v1/groups", body), 422, "validation-failed")
    problem(chat.call(None, "POST", "/v1/groups", {"title": "x"}), 401)
    assert _state(db) == before
    assert chat.call(admin, "POST", "/v1/groups", {"title": "ok", "member_ids": [a.id, b.id]})
    get_settings.cache_clear()


def test_only_admins_manage_and_outsiders_get_404(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    admin, member, eve, other = make_user(), make_user(), make_user(), make_user()
    gid = chat.group(admin, [member])
    direct = chat.direct(admin, member)
    before = _state(db)
    for user, status in ((member, 403), (eve, 404)):
        problem(chat.call(user, "PATCH", f"/v1/groups/{gid}", {"title": "New"}), status)
        problem(chat.call(user, "POST", f"/v1/groups/{gid}/members", {"user_id": other.id}), status)
        problem(chat.call(user, "DELETE", f"/v1/groups/{gid}/members/{admin.id}"), status)
        problem(
            chat.call(user, "PATCH", f"/v1/groups/{gid}/members/{user.id}", {"role": "admin"}),
            status,
        )
    problem(chat.call(eve, "POST", f"/v1/groups/{gid}/leave"), 404)
    # A direct conversation is not a group.
    problem(chat.call(admin, "PATCH", f"/v1/groups/{direct}", {"title": "x"}), 404)
    problem(chat.call(admin, "POST", f"/v1/groups/{direct}/leave"), 404)
    problem(chat.call(admin, "PATCH", f"/v1/groups/{gid}", {}), 422)
    problem(chat.call(admin, "POST", f"/v1/groups/{gid}/members", {}), 422)
    problem(
        chat.call(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": 1, "username": "x"}),
        422,
    )
    problem(chat.call(admin, "PATCH", f"/v1/groups/{gid}/members/{member.id}", {"role": "x"}), 422)
    problem(chat.call(admin, "DELETE", f"/v1/groups/{gid}/members/{eve.id}"), 404)
    problem(chat.call(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": member.id}), 409)
    problem(chat.call(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": 10**9}), 422)
    unknown = problem(
        chat.call(admin, "POST", f"/v1/groups/{gid}/members", {"username": "nobody_here"}), 422
    )
    assert [e["field"] for e in unknown["errors"]] == ["username"]
    assert _state(db) == before


def test_update_add_remove_and_roles_are_system_messages_with_events(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink
) -> None:
    admin, bob, carol = make_user(), make_user(), make_user()
    gid = chat.group(admin, [bob])
    renamed = chat.ok(admin, "PATCH", f"/v1/groups/{gid}", {"title": "Renamed"})
    assert renamed["conversation"]["title"] == "Renamed" and renamed["message"]["seq"] == 2
    # The same values again change nothing: no message, no seq.
    same = chat.ok(admin, "PATCH", f"/v1/groups/{gid}", {"title": "Renamed"})
    assert same["message"] is None and same["conversation"]["last_seq"] == 2
    described = chat.ok(admin, "PATCH", f"/v1/groups/{gid}", {"description": "about"})
    assert described["conversation"]["description"] == "about"
    assert described["conversation"]["title"] == "Renamed"
    added = chat.call(admin, "POST", f"/v1/groups/{gid}/members", {"username": carol.username})
    assert added.status_code == 201 and added.get_json()["message"]["seq"] == 4
    promoted = chat.ok(admin, "PATCH", f"/v1/groups/{gid}/members/{bob.id}", {"role": "admin"})
    assert promoted["message"]["system"]["type"] == "member.role_changed"
    unchanged = chat.ok(admin, "PATCH", f"/v1/groups/{gid}/members/{bob.id}", {"role": "admin"})
    assert unchanged["message"] is None
    removed = chat.ok(bob, "DELETE", f"/v1/groups/{gid}/members/{carol.id}")
    assert removed["message"]["seq"] == 6
    assert events_seen.wait_for(2, "member.removed")  # one per audience
    channel = events.conversation_channel(gid)
    on_group = [(e.type, e.seq) for e in events_seen.on(channel)]
    assert on_group == [
        ("group.created", 1),
        ("group.updated", 2),
        ("group.updated", 3),
        ("member.added", 4),
        ("member.role_changed", 5),
        ("member.removed", 6),
    ]
    carol_events = [
        (e.type, e.data.get("seq"), e.data.get("left_seq"))
        for e in events_seen.on(events.user_channel(carol.id))
    ]
    assert carol_events == [("member.added", 4, None), ("member.removed", None, 6)]
    # Carol can no longer write, and reads stop at her removal.
    problem(
        chat.call(
            carol,
            "POST",
            "/v1/messages",
            {"conversation_id": gid, "client_msg_id": "c", "text": "x"},
        ),
        403,
        "forbidden",
    )
    chat.send(admin, gid, "after carol")
    assert chat.history(carol, gid)["last_seq"] == 6
    listed = [c["id"] for c in chat.ok(carol, "GET", "/v1/conversations")["conversations"]]
    assert gid not in listed
    former = chat.ok(carol, "GET", f"/v1/conversations/{gid}")
    assert former["membership"] == "left" and former["members"] == [] and former["left_seq"] == 6
    # Added again, her window restarts at the new addition.
    chat.ok(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": carol.id})
    assert [m["seq"] for m in chat.history(carol, gid, after_seq=0)["messages"]] == [8]


def test_the_last_admin_leaving_promotes_the_longest_standing_member(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink
) -> None:
    admin, first, second = make_user(), make_user(), make_user()
    gid = chat.group(admin, [first])
    chat.ok(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": second.id})  # seq 2
    problem(
        chat.call(admin, "PATCH", f"/v1/groups/{gid}/members/{admin.id}", {"role": "member"}),
        409,
        "conflict",
    )
    left = chat.ok(admin, "POST", f"/v1/groups/{gid}/leave")
    assert left["conversation"]["membership"] == "left" and left["message"]["seq"] == 3
    assert left["conversation"]["role"] is None
    detail = chat.ok(first, "GET", f"/v1/conversations/{gid}")
    assert {m["user_id"]: m["role"] for m in detail["members"]} == {
        first.id: "admin",
        second.id: "member",
    }
    assert detail["last_seq"] == 4
    promotion = chat.history(first, gid)["messages"][0]
    assert promotion["system"] == {
        "type": "member.role_changed",
        "actor_id": None,
        "user_id": first.id,
        "role": "admin",
        "reason": "last-admin-left",
    }
    assert events_seen.wait_for(1, "member.role_changed")
    (event,) = events_seen.events("member.role_changed")
    assert event.seq == 4 and event.data["actor_id"] is None
    # A member leaving (not an admin) promotes nobody.
    chat.ok(second, "POST", f"/v1/groups/{gid}/leave")
    assert chat.ok(first, "GET", f"/v1/conversations/{gid}")["last_seq"] == 5
    problem(chat.call(second, "POST", f"/v1/groups/{gid}/leave"), 403, "forbidden")
