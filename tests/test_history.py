"""GET /v1/history/{conversation_id}: pages by seq both ways, within the caller's window."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, problem
from whatschat.config import get_settings

pytest_plugins = ["tests.messaging_fixtures"]


def _seqs(page: dict[str, object]) -> list[int]:
    return [m["seq"] for m in page["messages"]]  # type: ignore[attr-defined,index]


def test_pages_forward_and_backward(chat: Chat, make_user: Callable[..., AppUser]) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for n in range(7):
        chat.send(alice if n % 2 else bob, cid, f"m{n}")
    first = chat.history(alice, cid, after_seq=0, limit=3)
    assert _seqs(first) == [1, 2, 3] and first["has_more"] and first["next_cursor"] == 3
    assert first["direction"] == "after" and first["last_seq"] == 7
    assert first["messages"][0]["text"] == "m0"
    rest = chat.history(alice, cid, after_seq=6, limit=3)
    assert _seqs(rest) == [7] and rest["has_more"] is False
    newest = chat.history(alice, cid, limit=3)
    assert _seqs(newest) == [7, 6, 5] and newest["direction"] == "before"
    assert newest["has_more"] and newest["next_cursor"] == 5
    older = chat.history(alice, cid, before_seq=5, limit=10)
    assert _seqs(older) == [4, 3, 2, 1] and older["has_more"] is False
    empty = chat.history(alice, cid, after_seq=7)
    assert empty["messages"] == [] and empty["next_cursor"] is None and not empty["has_more"]


@pytest.fixture
def small_pages(settings: Callable[..., None]) -> None:
    settings(MAX_PAGE_SIZE="4")


def test_page_size_is_capped(
    chat: Chat, make_user: Callable[..., AppUser], small_pages: None
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for _ in range(6):
        chat.send(alice, cid)
    page = chat.history(alice, cid, after_seq=0, limit=100)
    assert _seqs(page) == [1, 2, 3, 4] and page["has_more"]
    get_settings.cache_clear()


def test_members_see_only_their_window(chat: Chat, make_user: Callable[..., AppUser]) -> None:
    admin, early, late, eve = make_user(), make_user(), make_user(), make_user()
    gid = chat.group(admin, [early])  # seq 1: created
    chat.send(admin, gid, "before late joined")  # 2
    chat.ok(admin, "POST", f"/v1/groups/{gid}/members", {"user_id": late.id})  # 3
    chat.send(admin, gid, "welcome")  # 4
    chat.ok(admin, "DELETE", f"/v1/groups/{gid}/members/{early.id}")  # 5
    chat.send(admin, gid, "after early left")  # 6
    assert _seqs(chat.history(admin, gid, after_seq=0)) == [1, 2, 3, 4, 5, 6]
    # The added member sees from the message recording the addition.
    late_page = chat.history(late, gid, after_seq=0)
    assert _seqs(late_page) == [3, 4, 5, 6]
    assert late_page["messages"][0]["system"]["type"] == "member.added"
    assert _seqs(chat.history(late, gid, before_seq=4)) == [3]
    # The removed member sees their removal and nothing after, in both directions.
    early_page = chat.history(early, gid)
    assert _seqs(early_page) == [5, 4, 3, 2, 1] and early_page["last_seq"] == 5
    assert _seqs(chat.history(early, gid, after_seq=4)) == [5]
    assert early_page["messages"][0]["system"] == {
        "type": "member.removed",
        "actor_id": admin.id,
        "user_id": early.id,
        "reason": "removed",
    }
    problem(chat.call(eve, "GET", f"/v1/history/{gid}"), 404, "not-found")


def test_bad_queries_are_422(chat: Chat, make_user: Callable[..., AppUser]) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for query in (
        {"after_seq": -1},
        {"after_seq": "x"},
        {"after_seq": 2**63},
        {"limit": 0},
        {"after_seq": 1, "before_seq": 3},
        {"cursor": 1},
    ):
        problem(chat.call(alice, "GET", f"/v1/history/{cid}", query=query), 422)
    problem(chat.call(None, "GET", f"/v1/history/{cid}"), 401, "unauthorized")
