"""POST /v1/sync: missed messages, edits, read positions and membership changes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, problem
from whatschat.config import get_settings

pytest_plugins = ["tests.messaging_fixtures"]


def _by_id(answer: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {entry["conversation"]["id"]: entry for entry in answer["conversations"]}


def test_missed_messages_joined_left_and_unknown(
    chat: Chat, make_user: Callable[..., AppUser]
) -> None:
    alice, bob, carol = make_user(), make_user(), make_user()
    direct = chat.direct(alice, bob)
    chat.send(bob, direct, "one")
    chat.send(bob, direct, "two")
    chat.send(bob, direct, "three")
    group = chat.group(carol, [alice])  # alice has not seen this one yet
    chat.send(carol, group, "hello group")
    old_group = chat.group(carol, [alice], title="Old")
    chat.ok(carol, "DELETE", f"/v1/groups/{old_group}/members/{alice.id}")  # seq 2
    chat.send(carol, old_group, "not for alice")
    hidden = chat.direct(bob, carol)

    answer = chat.ok(
        alice,
        "POST",
        "/v1/sync",
        {"positions": {str(direct): 1, str(old_group): 1, str(hidden): 0, "999999": 0}},
    )
    assert answer["joined"] == [group]
    assert answer["left"] == [old_group]
    assert answer["unknown"] == sorted([hidden, 999999])
    entries = _by_id(answer)
    assert set(entries) == {direct, group, old_group}
    missed = entries[direct]
    assert [m["text"] for m in missed["messages"]] == ["two", "three"]
    assert missed["has_more"] is False and missed["next_cursor"] == 3
    assert missed["conversation"]["unread_count"] == 3
    assert {p["user_id"]: p["read_seq"] for p in missed["read_positions"]} == {
        alice.id: 0,
        bob.id: 3,
    }
    # A conversation the client did not list: from the start of the caller's window.
    assert [m["seq"] for m in entries[group]["messages"]] == [1, 2]
    # One the caller left: up to the removal, nothing after, no read positions.
    left = entries[old_group]
    assert [m["seq"] for m in left["messages"]] == [2]
    assert left["messages"][0]["system"]["type"] == "member.removed"
    assert left["conversation"]["membership"] == "left" and left["read_positions"] == []
    # Up to date: nothing to send.
    again = chat.ok(alice, "POST", "/v1/sync", {"positions": {str(direct): 3, str(group): 2}})
    assert all(entry["messages"] == [] for entry in again["conversations"])
    assert again["joined"] == [] and again["left"] == []


@pytest.fixture
def short_sync(settings: Callable[..., None]) -> None:
    settings(SYNC_MESSAGES_PER_CONVERSATION="3")


def test_too_far_behind_says_page_with_history(
    chat: Chat, make_user: Callable[..., AppUser], short_sync: None
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for n in range(8):
        chat.send(bob, cid, f"m{n}")
    entry = _by_id(chat.ok(alice, "POST", "/v1/sync", {"positions": {str(cid): 1}}))[cid]
    assert [m["seq"] for m in entry["messages"]] == [2, 3, 4]
    assert entry["has_more"] is True and entry["next_cursor"] == 4
    rest = chat.history(alice, cid, after_seq=entry["next_cursor"], limit=10)
    assert [m["seq"] for m in rest["messages"]] == [5, 6, 7, 8]
    get_settings.cache_clear()


def test_edits_missed_before_the_position_come_back_by_edit_seq(
    chat: Chat, make_user: Callable[..., AppUser]
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for n in range(3):
        chat.send(bob, cid, f"m{n}")
    first = _by_id(chat.ok(alice, "POST", "/v1/sync", {"positions": {str(cid): 0}}))[cid]
    assert first["edits"] == [] and first["edit_cursor"] == 0
    # Alice is offline while bob edits and deletes messages she already has.
    chat.ok(bob, "PATCH", f"/v1/messages/{cid}/1", {"text": "m0 (fixed)"})
    chat.ok(bob, "DELETE", f"/v1/messages/{cid}/2")
    chat.ok(bob, "PATCH", f"/v1/messages/{cid}/1", {"text": "m0 (fixed twice)"})
    entry = _by_id(
        chat.ok(
            alice,
            "POST",
            "/v1/sync",
            {"positions": {str(cid): 3}, "edit_positions": {str(cid): 0}},
        )
    )[cid]
    assert entry["messages"] == []
    # Each edited message once, in the order of its latest change.
    assert [(m["seq"], m["text"], m["deleted"]) for m in entry["edits"]] == [
        (2, None, True),
        (1, "m0 (fixed twice)", False),
    ]
    assert entry["edit_cursor"] == 3 and entry["conversation"]["last_edit_seq"] == 3
    after = _by_id(
        chat.ok(
            alice,
            "POST",
            "/v1/sync",
            {"positions": {str(cid): 3}, "edit_positions": {str(cid): 3}},
        )
    )[cid]
    assert after["edits"] == [] and after["edit_cursor"] == 3


def test_bad_sync_requests_are_422(chat: Chat, make_user: Callable[..., AppUser]) -> None:
    alice = make_user()
    for body in (
        {"positions": {"abc": 1}},
        {"positions": {"1": -1}},
        {"positions": {"0": 1}},
        {"positions": [1, 2]},
        {"positions": {"1": 2**63}},
        {"since": 1},
    ):
        problem(chat.call(alice, "POST", "/v1/sync", body), 422, "validation-failed")
    problem(chat.call(None, "POST", "/v1/sync", {}), 401)
    assert chat.ok(alice, "POST", "/v1/sync", {}) == {
        "conversations": [],
        "joined": [],
        "left": [],
        "unknown": [],
    }
