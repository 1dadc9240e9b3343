"""Every malformed or unauthorized request to a messaging function: a 4xx
problem+json response and nothing written (no row, no seq, no event)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from functions.routes import find
from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink

pytest_plugins = ["tests.messaging_fixtures"]

# (method, path template, a valid-looking body). {c} is a conversation the
# caller may not touch, {g} a group, {u} another user.
OPERATIONS: list[tuple[str, str, Any]] = [
    ("GET", "/v1/conversations", None),
    ("GET", "/v1/conversations/{c}", None),
    ("POST", "/v1/conversations/direct", {"username": "{name}"}),
    ("POST", "/v1/messages", {"conversation_id": "{c}", "client_msg_id": "x", "text": "hi"}),
    ("PATCH", "/v1/messages/{c}/1", {"text": "edited"}),
    ("DELETE", "/v1/messages/{c}/1", None),
    ("GET", "/v1/history/{c}", None),
    ("POST", "/v1/sync", {"positions": {"{c}": 0}}),
    ("POST", "/v1/receipts", {"conversation_id": "{c}", "seq": 1}),
    ("POST", "/v1/groups", {"title": "t", "member_ids": ["{u}"]}),
    ("PATCH", "/v1/groups/{g}", {"title": "t2"}),
    ("POST", "/v1/groups/{g}/members", {"user_id": "{u}"}),
    ("DELETE", "/v1/groups/{g}/members/{u}", None),
    ("PATCH", "/v1/groups/{g}/members/{u}", {"role": "admin"}),
    ("POST", "/v1/groups/{g}/leave", None),
]


def _fill(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for key, replacement in names.items():
            if value == "{" + key + "}":
                return replacement
            value = value.replace("{" + key + "}", str(replacement))
        return value
    if isinstance(value, dict):
        return {_fill(k, names): _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _snapshot(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return tuple(
        db.execute(sql).fetchall()
        for sql in (
            "SELECT id, title, description, last_seq, last_edit_seq FROM conversations ORDER BY id",
            "SELECT conversation_id, user_id, role, left_seq, read_seq FROM members"
            " ORDER BY conversation_id, user_id",
            "SELECT id, body, edit_seq, deleted_at FROM messages ORDER BY id",
            "SELECT id FROM outbox ORDER BY id",
        )
    )


@pytest.mark.parametrize(
    ("caller", "status"),
    [
        ("nobody", 401),
        ("bad-token", 401),
        ("outsider", 404),
        ("wrong-type", 415),
        ("not-json", 400),
    ],
)
def test_bad_requests_write_nothing(
    chat: Chat,
    make_user: Callable[..., AppUser],
    events_seen: EventSink,
    db: psycopg.Connection[Any],
    caller: str,
    status: int,
) -> None:
    alice, bob, eve = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    chat.send(alice, cid)
    gid = chat.group(alice, [bob])
    names = {"c": cid, "g": gid, "u": bob.id, "name": bob.username}
    assert events_seen.wait_for(6)  # 2 conversation.created, message, group + 2 member.added
    published = len(events_seen.events())
    before = _snapshot(db)
    for method, template, body in OPERATIONS:
        if caller == "outsider" and template in (
            "/v1/conversations",  # lists only the caller's own
            "/v1/sync",  # answers "unknown" for others' ids: test_sync
            "/v1/conversations/direct",  # anyone may open a conversation
            "/v1/groups",  # or create a group
        ):
            continue
        if caller in ("wrong-type", "not-json") and body is None:
            continue  # no body to get wrong
        path = _fill(template, names)
        if caller in ("nobody", "bad-token", "outsider"):
            headers = {"Authorization": "Bearer not.a.token"} if caller == "bad-token" else {}
            user = eve if caller == "outsider" else None
            response = chat.call(user, method, path, _fill(body, names), headers=headers)
        else:
            content_type = "text/plain" if caller == "wrong-type" else "application/json"
            response = _raw(chat, alice, method, path, content_type)
        assert response.status_code == status, (method, path, response.data)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.get_json(force=True)["status"] == status
    assert _snapshot(db) == before
    assert len(events_seen.events()) == published


def _raw(chat: Chat, user: AppUser, method: str, path: str, content_type: str) -> Any:
    """A body that is not JSON, sent with the given Content-Type."""
    route = find(path)
    assert route is not None
    client = chat.clients.get(route.target) or chat.make_client(route.target)
    return client.open(
        path, method=method, data=b"hello", headers={**user.auth, "Content-Type": content_type}
    )
