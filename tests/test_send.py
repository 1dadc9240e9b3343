"""POST /v1/messages: the write path, idempotent retries, validation, rate limit."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.conftest import AppUser
from tests.messaging_helpers import Chat, EventSink, problem
from whatschat import events
from whatschat.config import get_settings

pytest_plugins = ["tests.messaging_fixtures"]


def _counts(db: psycopg.Connection[Any]) -> tuple[int, int]:
    row = db.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM outbox)")
    found = row.fetchone()
    assert found is not None
    return int(found[0]), int(found[1])


def test_send_assigns_seqs_persists_and_publishes_once(
    chat: Chat, make_user: Callable[..., AppUser], events_seen: EventSink, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    first = chat.send(alice, cid, "hello")
    second = chat.send(bob, cid, "hi alice")
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["sender_id"] == alice.id and first["text"] == "hello"
    assert first["kind"] == "text" and first["deleted"] is False
    assert events_seen.wait_for(2, "message.created")
    created = events_seen.on(events.conversation_channel(cid))
    assert [(e.type, e.seq) for e in created] == [("message.created", 1), ("message.created", 2)]
    # The event carries the same MessageView the API answered with.
    assert created[0].data["message"] == first
    row = db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
    assert row == (0,)


def test_retry_with_the_same_client_msg_id_returns_the_original(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    body = {"conversation_id": cid, "client_msg_id": "m-1", "text": "once"}
    before = _counts(db)
    first = chat.call(alice, "POST", "/v1/messages", body)
    again = chat.call(alice, "POST", "/v1/messages", {**body, "text": "changed"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.get_json() == first.get_json()
    assert _counts(db) == (before[0] + 1, before[1] + 1)
    # The same client_msg_id from another sender is another message.
    other = chat.call(bob, "POST", "/v1/messages", body)
    assert other.status_code == 201 and other.get_json()["seq"] == 2


def test_concurrent_retries_create_one_message(
    chat: Chat, make_user: Callable[..., AppUser], function_client: Any, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    statuses: list[int] = []
    seqs: list[int] = []
    barrier = threading.Barrier(6)

    def retry() -> None:
        client = function_client("send")
        barrier.wait()
        response = client.post(
            "/v1/messages",
            json={"conversation_id": cid, "client_msg_id": "same", "text": "x"},
            headers=alice.auth,
        )
        statuses.append(response.status_code)
        seqs.append(response.get_json()["seq"])

    before = _counts(db)
    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 5 + [201]
    assert set(seqs) == {1}
    assert _counts(db) == (before[0] + 1, before[1] + 1)


def test_client_msg_id_reused_for_another_conversation_is_a_conflict(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob, carol = make_user(), make_user(), make_user()
    one, two = chat.direct(alice, bob), chat.direct(alice, carol)
    chat.send(alice, one, client_msg_id="dup")
    before = _counts(db)
    response = chat.call(
        alice, "POST", "/v1/messages", {"conversation_id": two, "client_msg_id": "dup", "text": "x"}
    )
    problem(response, 409, "conflict")
    assert _counts(db) == before


def test_reply_and_limits(chat: Chat, make_user: Callable[..., AppUser], db: Any) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    chat.send(alice, cid, "question")
    reply = chat.send(bob, cid, "answer", reply_to_seq=1)
    assert reply["reply_to_seq"] == 1
    limit = get_settings().max_message_chars
    assert chat.send(alice, cid, "x" * limit)["seq"] == 3
    before = _counts(db)
    for body in (
        {"text": "x" * (limit + 1)},
        {"text": "   "},
        {"text": "ok", "reply_to_seq": 4},  # not yet sent
        {"text": "ok", "reply_to_seq": 0},
        {},  # neither text nor attachment
        {"text": "ok", "attachment_id": str(uuid.uuid4())},
        {"text": "nul \x00 inside"},
    ):
        response = chat.call(
            alice,
            "POST",
            "/v1/messages",
            {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex, **body},
        )
        problem(response, 422, "validation-failed")
    assert _counts(db) == before
    # The failed sends gave their seqs back: the next one is 4.
    assert chat.send(alice, cid, "next")["seq"] == 4


def test_attachment_must_be_the_senders_upload_in_this_conversation(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob, carol = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    other = chat.direct(alice, carol)

    def attachment(conversation_id: int, uploader: AppUser) -> str:
        attachment_id = uuid.uuid4()
        db.execute(
            "INSERT INTO attachments (id, conversation_id, uploader_id, object_key, file_name,"
            " content_type, size_bytes) VALUES (%s, %s, %s, %s, 'a.png', 'image/png', 10)",
            (attachment_id, conversation_id, uploader.id, f"k/{attachment_id}"),
        )
        return str(attachment_id)

    mine = attachment(cid, alice)
    sent = chat.send(alice, cid, "look", attachment_id=mine)
    assert sent["kind"] == "file"
    assert sent["attachment"] == {
        "id": mine,
        "file_name": "a.png",
        "content_type": "image/png",
        "size_bytes": 10,
    }
    for wrong in (attachment(other, alice), attachment(cid, bob)):
        response = chat.call(
            alice,
            "POST",
            "/v1/messages",
            {"conversation_id": cid, "client_msg_id": uuid.uuid4().hex, "attachment_id": wrong},
        )
        problem(response, 422, "validation-failed")
    # Without text a file message has text null.
    no_text = chat.call(
        alice,
        "POST",
        "/v1/messages",
        {"conversation_id": cid, "client_msg_id": "f2", "attachment_id": attachment(cid, alice)},
    )
    assert no_text.status_code == 201 and no_text.get_json()["text"] is None


def test_non_members_get_404_and_nothing_is_written(
    chat: Chat, make_user: Callable[..., AppUser], db: Any
) -> None:
    alice, bob, eve = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    before = _counts(db)
    for conversation_id in (cid, cid + 1000):
        response = chat.call(
            eve,
            "POST",
            "/v1/messages",
            {"conversation_id": conversation_id, "client_msg_id": "e", "text": "hi"},
        )
        body = problem(response, 404, "not-found")
        assert str(cid + 1000) not in body.get("detail", "") or conversation_id == cid + 1000
    assert _counts(db) == before
    assert db.execute("SELECT last_seq FROM conversations WHERE id = %s", (cid,)).fetchone() == (0,)


@pytest.fixture
def tight_send_limit(settings: Callable[..., None]) -> None:
    settings(SEND_RATE_LIMIT="3", SEND_RATE_WINDOW_SECONDS="60")


def test_sending_too_fast_is_429_with_retry_after(
    chat: Chat, make_user: Callable[..., AppUser], tight_send_limit: None, db: Any
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    for _ in range(3):
        chat.send(alice, cid)
    response = chat.call(
        alice, "POST", "/v1/messages", {"conversation_id": cid, "client_msg_id": "4", "text": "x"}
    )
    body = problem(response, 429, "rate-limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 60 and body["retry_after"] >= 1
    assert _counts(db)[0] == 3
    # The limit is per user: bob still sends.
    assert chat.send(bob, cid)["seq"] == 4
    get_settings.cache_clear()
