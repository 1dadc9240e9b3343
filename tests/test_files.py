"""Uploads and downloads end to end against moto's S3 server: request a presigned
POST, upload with a real multipart POST, complete, download with the presigned GET.

What moto does not enforce (POST policy conditions) is tested where it can be
and skipped, with the reason, where only a policy-enforcing S3 can show it
(run the suite with S3_ENDPOINT_URL pointing at LocalStack to run those).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import AppUser, Stack
from tests.files_helpers import (
    PDF,
    PNG,
    Conversation,
    add_member,
    attachment_count,
    keys_under,
    send_file_message,
    upload_to_s3,
)
from whatschat.config import get_settings
from whatschat.storage import objects

# The fixtures `conversation`, `fresh_bucket` and `file_settings`.
pytest_plugins = ["tests.files_fixtures"]


@pytest.fixture
def uploads(function_client: Callable[[str], Any]) -> Any:
    return function_client("uploads")


@pytest.fixture
def downloads(function_client: Callable[[str], Any]) -> Any:
    return function_client("downloads")


def request_upload(
    uploads: Any,
    user: AppUser,
    conversation_id: int,
    data: bytes,
    content_type: str,
    file_name: str = "file.bin",
    size: int | None = None,
) -> Any:
    return uploads.post(
        "/v1/uploads",
        json={
            "conversation_id": conversation_id,
            "file_name": file_name,
            "content_type": content_type,
            "size_bytes": len(data) if size is None else size,
        },
        headers=user.auth,
    )


def uploaded(
    uploads: Any,
    user: AppUser,
    conversation_id: int,
    data: bytes,
    content_type: str,
    file_name: str = "file.bin",
) -> dict[str, Any]:
    """Request an upload and POST ``data`` to S3; returns the ticket."""
    response = request_upload(uploads, user, conversation_id, data, content_type, file_name)
    assert response.status_code == 201, response.get_json()
    ticket: dict[str, Any] = response.get_json()
    stored = upload_to_s3(ticket, data)
    assert stored.status_code in (200, 201, 204), stored.text
    return ticket


def complete(uploads: Any, user: AppUser, ticket: dict[str, Any]) -> Any:
    return uploads.post(ticket["complete_url"], headers=user.auth)


def incoming_key(ticket: dict[str, Any]) -> str:
    return str(ticket["fields"]["key"])


# --- happy paths -----------------------------------------------------------------------


def test_png_upload_complete_send_and_download(
    uploads: Any, downloads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(2)
    alice, bob = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png", "holiday photo.png")
    assert ticket["method"] == "POST"
    assert incoming_key(ticket).startswith(f"incoming/{chat.id}/{alice.id}/")

    response = complete(uploads, alice, ticket)
    assert response.status_code == 201, response.get_json()
    attachment = response.get_json()
    assert attachment["id"] == ticket["attachment_id"]
    assert attachment["conversation_id"] == chat.id
    assert attachment["uploader_id"] == alice.id
    assert attachment["file_name"] == "holiday photo.png"
    assert attachment["content_type"] == "image/png"
    assert attachment["size_bytes"] == len(PNG)

    row = db.execute(
        "SELECT object_key, size_bytes FROM attachments WHERE id = %s", (attachment["id"],)
    ).fetchone()
    assert row[0].startswith(f"files/{chat.id}/{attachment['id']}/")
    assert row[1] == len(PNG)
    assert keys_under(incoming_key(ticket)) == []  # moved, not left behind
    assert keys_under(f"files/{chat.id}/{attachment['id']}/") == [row[0]]

    send_file_message(db, chat.id, alice, attachment["id"])
    link = downloads.get(f"/v1/attachments/{attachment['id']}", headers=bob.auth)
    assert link.status_code == 200, link.get_json()
    body = link.get_json()
    assert body["attachment"]["id"] == attachment["id"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 300

    fetched = requests.get(body["url"], timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == PNG
    assert fetched.headers["Content-Type"] == "image/png"
    disposition = fetched.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''holiday%20photo.png" in disposition


def test_pdf_upload_is_downloadable_by_its_uploader(
    uploads: Any, downloads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, PDF, "application/pdf", "Rapport année.pdf")
    response = complete(uploads, alice, ticket)
    assert response.status_code == 201, response.get_json()
    attachment_id = response.get_json()["id"]

    link = downloads.get(f"/v1/attachments/{attachment_id}", headers=alice.auth)
    assert link.status_code == 200
    fetched = requests.get(link.get_json()["url"], timeout=10)
    assert fetched.content == PDF
    assert fetched.headers["Content-Type"] == "application/pdf"
    disposition = fetched.headers["Content-Disposition"]
    assert 'filename="Rapport annee.pdf"' in disposition
    assert "filename*=UTF-8''Rapport%20ann%C3%A9e.pdf" in disposition


def test_text_file_is_served_as_utf8(
    uploads: Any, downloads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    text = "Grüße\nline two\n".encode()
    ticket = uploaded(uploads, alice, chat.id, text, "text/plain", "notes.txt")
    attachment_id = complete(uploads, alice, ticket).get_json()["id"]
    url = downloads.get(f"/v1/attachments/{attachment_id}", headers=alice.auth).get_json()["url"]
    fetched = requests.get(url, timeout=10)
    assert fetched.content == text
    assert fetched.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_completing_twice_returns_the_same_attachment(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    first = complete(uploads, alice, ticket)
    again = complete(uploads, alice, ticket)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.get_json() == first.get_json()
    assert (
        db.execute(
            "SELECT count(*) FROM attachments WHERE id = %s", (ticket["attachment_id"],)
        ).fetchone()[0]
        == 1
    )


def test_redirect_answers_302_to_the_presigned_url(
    uploads: Any, downloads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    attachment_id = complete(uploads, alice, ticket).get_json()["id"]
    response = downloads.get(f"/v1/attachments/{attachment_id}?redirect=1", headers=alice.auth)
    assert response.status_code == 302
    assert requests.get(response.headers["Location"], timeout=10).content == PNG


# --- the presigned policy ----------------------------------------------------------------


def test_policy_pins_key_type_metadata_and_exact_length(
    uploads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    response = request_upload(uploads, alice, chat.id, PNG, "Image/PNG", "a/b\\evil\x00.png")
    assert response.status_code == 201
    ticket = response.get_json()
    assert ticket["content_type"] == "image/png"
    assert ticket["file_name"] == "evil.png"  # no folders, no control characters
    policy = json.loads(base64.b64decode(ticket["fields"]["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", len(PNG), len(PNG)] in conditions
    assert {"Content-Type": "image/png"} in conditions
    assert {"key": incoming_key(ticket)} in conditions
    assert {"bucket": get_settings().s3_bucket} in conditions
    assert {"x-amz-meta-declared-size": str(len(PNG))} in conditions
    assert {"x-amz-meta-file-name": "evil.png"} in conditions
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert 0 < (expiration - datetime.now(UTC)).total_seconds() <= 600
    # Every form field the client sends is covered by a condition (S3 requires it).
    signed = {"policy", "x-amz-signature"}
    named = {name.lower() for c in conditions if isinstance(c, dict) for name in c}
    assert {f.lower() for f in ticket["fields"]} - signed <= named


def _store_enforces_policies(response: requests.Response) -> None:
    if response.status_code < 300:
        pytest.skip(
            "this S3 accepted an upload its POST policy forbids: moto does not check POST"
            " policy conditions (LocalStack and AWS do); completion catches it instead"
        )


def test_store_rejects_a_file_larger_than_declared(
    uploads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = request_upload(uploads, alice, chat.id, PNG, "image/png").get_json()
    response = upload_to_s3(ticket, PNG + b"\0" * 1024)
    _store_enforces_policies(response)
    assert response.status_code in (400, 403)
    assert keys_under(incoming_key(ticket)) == []


def test_store_rejects_a_different_content_type(
    uploads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = request_upload(uploads, alice, chat.id, PNG, "image/png").get_json()
    response = upload_to_s3(ticket, PNG, **{"Content-Type": "text/html"})
    _store_enforces_policies(response)
    assert response.status_code in (400, 403)
    assert keys_under(incoming_key(ticket)) == []


# --- refused requests --------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["image/svg+xml", "text/html", "application/zip"])
def test_request_refuses_types_outside_the_allowlist(
    uploads: Any, conversation: Callable[..., Conversation], content_type: str
) -> None:
    chat = conversation(1)
    response = request_upload(uploads, chat.members[0], chat.id, b"<svg/>", content_type)
    assert response.status_code == 415
    body = response.get_json()
    assert body["code"] == "file-type-not-allowed"
    assert "image/png" in body["allowed"]


def test_request_refuses_files_over_the_limit(
    uploads: Any, conversation: Callable[..., Conversation], file_settings: Any
) -> None:
    file_settings(MAX_UPLOAD_BYTES="1000")
    chat = conversation(1)
    response = request_upload(uploads, chat.members[0], chat.id, PNG, "image/png", size=1001)
    assert response.status_code == 413
    assert response.get_json()["code"] == "file-too-large"
    assert response.get_json()["max_bytes"] == 1000


@pytest.mark.parametrize(
    "changes",
    [{"size_bytes": 0}, {"conversation_id": 0}, {"file_name": ""}, {"file_name": "\x00\x01"}],
)
def test_request_validates_fields(
    uploads: Any, conversation: Callable[..., Conversation], changes: dict[str, Any]
) -> None:
    chat = conversation(1)
    body = {
        "conversation_id": chat.id,
        "file_name": "a.png",
        "content_type": "image/png",
        "size_bytes": 10,
        **changes,
    }
    response = uploads.post("/v1/uploads", json=body, headers=chat.members[0].auth)
    assert response.status_code == 422
    assert response.get_json()["code"] == "validation-failed"


def test_non_member_cannot_request_an_upload(
    uploads: Any, conversation: Callable[..., Conversation], make_user: Callable[..., AppUser]
) -> None:
    chat = conversation(1)
    response = request_upload(uploads, make_user(), chat.id, PNG, "image/png")
    assert response.status_code == 404
    missing = request_upload(uploads, chat.members[0], 999_999_999, PNG, "image/png")
    assert missing.status_code == 404


def test_requests_need_a_token(uploads: Any, downloads: Any) -> None:
    assert uploads.post("/v1/uploads", json={}).status_code == 401
    assert downloads.get("/v1/attachments/00000000-0000-0000-0000-000000000000").status_code == 401


# --- completion rejects what does not match ----------------------------------------------


def test_completion_without_an_upload_is_404_and_records_nothing(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = request_upload(uploads, alice, chat.id, PNG, "image/png").get_json()
    before = attachment_count(db)
    response = complete(uploads, alice, ticket)
    assert response.status_code == 404
    assert attachment_count(db) == before


def test_completion_of_a_file_of_another_size_is_rejected_and_removed(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = request_upload(uploads, alice, chat.id, PNG, "image/png").get_json()
    # moto does not enforce content-length-range, so the wrong size reaches S3;
    # completion must catch it.
    stored = upload_to_s3(ticket, PNG + b"trailing")
    if stored.status_code >= 300:
        pytest.skip("this S3 enforces the policy: the wrong size never reaches completion")
    before = attachment_count(db)
    response = complete(uploads, alice, ticket)
    assert response.status_code == 422
    assert response.get_json()["code"] == "upload-mismatch"
    assert attachment_count(db) == before
    assert keys_under(incoming_key(ticket)) == []
    assert keys_under(f"files/{chat.id}/{ticket['attachment_id']}/") == []


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("image/png", b"<html><script>alert(1)</script></html>"),
        ("image/jpeg", PNG),
        ("application/pdf", b"MZ\x90\x00 not a pdf"),
        ("text/plain", b"\x00\x01\x02binary"),
        ("image/webp", b"RIFF\x00\x00\x00\x00WAVEfmt "),
    ],
)
def test_completion_of_content_that_is_not_the_declared_type_is_rejected_and_removed(
    uploads: Any,
    conversation: Callable[..., Conversation],
    db: Any,
    content_type: str,
    data: bytes,
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, data, content_type)
    before = attachment_count(db)
    response = complete(uploads, alice, ticket)
    assert response.status_code == 422
    assert response.get_json()["code"] == "upload-mismatch"
    assert attachment_count(db) == before
    assert keys_under(incoming_key(ticket)) == []
    assert keys_under(f"files/{chat.id}/{ticket['attachment_id']}/") == []


def test_completion_of_an_upload_with_a_changed_type_field_is_rejected(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = request_upload(uploads, alice, chat.id, PNG, "image/png").get_json()
    html = b"<html><script></script></html>".ljust(len(PNG))  # the declared size
    stored = upload_to_s3(ticket, html, **{"Content-Type": "text/html"})
    if stored.status_code >= 300:
        pytest.skip("this S3 enforces the policy: the changed type never reaches completion")
    before = attachment_count(db)
    response = complete(uploads, alice, ticket)
    assert response.status_code == 422
    assert response.get_json()["code"] == "upload-mismatch"
    assert keys_under(incoming_key(ticket)) == []
    assert attachment_count(db) == before


def test_another_user_cannot_complete_someone_elses_upload(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(2)
    alice, bob = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    response = complete(uploads, bob, ticket)
    assert response.status_code == 404
    assert keys_under(incoming_key(ticket)) == [incoming_key(ticket)]  # alice's upload is intact
    assert complete(uploads, alice, ticket).status_code == 201


def test_a_member_who_left_cannot_complete(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(2)
    alice = chat.members[0]
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    db.execute(
        "UPDATE members SET left_seq = 0 WHERE conversation_id = %s AND user_id = %s",
        (chat.id, alice.id),
    )
    assert complete(uploads, alice, ticket).status_code == 404


@pytest.mark.parametrize("upload_id", ["nope", "1.zz", "0.00000000000000000000000000000000"])
def test_malformed_upload_ids_are_404(
    uploads: Any, conversation: Callable[..., Conversation], upload_id: str
) -> None:
    chat = conversation(1)
    response = uploads.post(f"/v1/uploads/{upload_id}/complete", headers=chat.members[0].auth)
    assert response.status_code == 404


# --- downloads: members only -------------------------------------------------------------


@pytest.fixture
def sent_png(
    uploads: Any, conversation: Callable[..., Conversation], db: Any
) -> tuple[Conversation, str]:
    """A PNG sent as a message by the first of two members; (conversation, attachment id)."""
    chat = conversation(2)
    ticket = uploaded(uploads, chat.members[0], chat.id, PNG, "image/png")
    attachment_id = complete(uploads, chat.members[0], ticket).get_json()["id"]
    send_file_message(db, chat.id, chat.members[0], attachment_id)
    return chat, attachment_id


def test_non_member_download_is_404(
    downloads: Any, sent_png: tuple[Conversation, str], make_user: Callable[..., AppUser]
) -> None:
    _, attachment_id = sent_png
    response = downloads.get(f"/v1/attachments/{attachment_id}", headers=make_user().auth)
    assert response.status_code == 404
    assert response.get_json()["code"] == "not-found"
    assert "url" not in response.get_json()


def test_a_member_who_joined_after_the_message_cannot_download(
    downloads: Any, sent_png: tuple[Conversation, str], make_user: Callable[..., AppUser], db: Any
) -> None:
    chat, attachment_id = sent_png
    late = make_user()
    add_member(db, chat.id, late)
    assert downloads.get(f"/v1/attachments/{attachment_id}", headers=late.auth).status_code == 404


def test_a_member_who_left_cannot_download(
    downloads: Any, sent_png: tuple[Conversation, str], db: Any
) -> None:
    chat, attachment_id = sent_png
    bob = chat.members[1]
    assert downloads.get(f"/v1/attachments/{attachment_id}", headers=bob.auth).status_code == 200
    db.execute(
        "UPDATE members SET left_seq = 1 WHERE conversation_id = %s AND user_id = %s",
        (chat.id, bob.id),
    )
    assert downloads.get(f"/v1/attachments/{attachment_id}", headers=bob.auth).status_code == 404


def test_an_unsent_attachment_is_only_for_its_uploader(
    uploads: Any, downloads: Any, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(2)
    alice, bob = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    attachment_id = complete(uploads, alice, ticket).get_json()["id"]
    assert downloads.get(f"/v1/attachments/{attachment_id}", headers=bob.auth).status_code == 404
    assert downloads.get(f"/v1/attachments/{attachment_id}", headers=alice.auth).status_code == 200


def test_unknown_attachment_is_404(downloads: Any, make_user: Callable[..., AppUser]) -> None:
    response = downloads.get(
        "/v1/attachments/6f1c1f43-3f53-4a5e-9d0b-2b8f0e0d2f11", headers=make_user().auth
    )
    assert response.status_code == 404


def test_a_lost_file_is_410(downloads: Any, sent_png: tuple[Conversation, str], db: Any) -> None:
    chat, attachment_id = sent_png
    key = db.execute(
        "SELECT object_key FROM attachments WHERE id = %s", (attachment_id,)
    ).fetchone()[0]
    objects.delete(key)  # as when the local stack's in-memory S3 restarted
    response = downloads.get(f"/v1/attachments/{attachment_id}", headers=chat.members[1].auth)
    assert response.status_code == 410
    assert response.get_json()["code"] == "attachment-gone"


# --- the saga's compensation -------------------------------------------------------------


@pytest.fixture
def failing_attachment_insert(db: psycopg.Connection[Any]) -> Iterator[None]:
    """Every INSERT into attachments fails as if the primary shut down (SQLSTATE 57P01)."""
    db.execute(
        """
        CREATE FUNCTION test_fail_attachment_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'primary going away' USING ERRCODE = '57P01'; END $$;
        CREATE TRIGGER test_fail_attachment_insert BEFORE INSERT ON attachments
            FOR EACH ROW EXECUTE FUNCTION test_fail_attachment_insert();
        """
    )
    try:
        yield
    finally:
        db.execute(
            "DROP TRIGGER IF EXISTS test_fail_attachment_insert ON attachments;"
            " DROP FUNCTION IF EXISTS test_fail_attachment_insert();"
        )


def test_a_failed_insert_removes_the_copy_and_the_client_can_retry(
    uploads: Any, conversation: Callable[..., Conversation], db: Any, request: Any
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    request.getfixturevalue("failing_attachment_insert")
    before = attachment_count(db)
    response = complete(uploads, alice, ticket)
    assert response.status_code == 503
    assert attachment_count(db) == before
    assert keys_under(f"files/{chat.id}/{ticket['attachment_id']}/") == []  # compensated
    assert keys_under(incoming_key(ticket)) == [incoming_key(ticket)]  # kept for the retry

    db.execute(
        "DROP TRIGGER test_fail_attachment_insert ON attachments;"
        " DROP FUNCTION test_fail_attachment_insert();"
    )
    retried = complete(uploads, alice, ticket)
    assert retried.status_code == 201
    assert attachment_count(db) == before + 1


# --- S3 unreachable ----------------------------------------------------------------------


@pytest.fixture
def silent_s3(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """S3_ENDPOINT_URL points at a socket that accepts connections and never answers:
    the worst kind of outage (a refused connection fails at once)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setenv("S3_TIMEOUT_SECONDS", "1")
        get_settings.cache_clear()
        yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_s3_unreachable_gives_fast_503s_and_records_nothing(
    uploads: Any,
    downloads: Any,
    conversation: Callable[..., Conversation],
    db: Any,
    sent_png: tuple[Conversation, str],
    request: Any,
) -> None:
    chat = conversation(1)
    (alice,) = chat.members
    ticket = uploaded(uploads, alice, chat.id, PNG, "image/png")
    _, sent_id = sent_png
    sender = sent_png[0].members[0]
    before = attachment_count(db)
    request.getfixturevalue("silent_s3")

    calls = {
        "request": lambda: request_upload(uploads, alice, chat.id, PNG, "image/png"),
        "complete": lambda: complete(uploads, alice, ticket),
        "download": lambda: downloads.get(f"/v1/attachments/{sent_id}", headers=sender.auth),
    }
    for name, call in calls.items():
        started = time.monotonic()
        response = call()
        elapsed = time.monotonic() - started
        assert response.status_code == 503, (name, response.get_json())
        assert response.headers["Retry-After"]
        assert response.get_json()["code"] == "service-unavailable"
        assert elapsed < 10, f"{name} hung for {elapsed:.1f}s"  # a hang guard, not a benchmark
    assert attachment_count(db) == before
