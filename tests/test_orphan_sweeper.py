"""The orphan sweeper against moto's server: uploads never completed and files no
attachment row records are deleted once older than the grace period; recorded
files and young objects stay."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from tests.files_helpers import PNG, Conversation, keys_under
from whatschat import files
from whatschat.config import get_settings
from whatschat.storage import objects

# The fixtures `conversation`, `fresh_bucket` and `file_settings`.
pytest_plugins = ["tests.files_fixtures"]

LATER = timedelta(hours=2)  # past the default grace period of one hour


def put(key: str) -> None:
    objects.client().put_object(
        Bucket=get_settings().s3_bucket, Key=key, Body=PNG, ContentType="image/png"
    )


def record(db: psycopg.Connection[Any], chat: Conversation, key: str) -> None:
    db.execute(
        "INSERT INTO attachments (id, conversation_id, uploader_id, object_key, file_name,"
        " content_type, size_bytes) VALUES (%s, %s, %s, %s, 'a.png', 'image/png', %s)",
        (uuid.uuid4(), chat.id, chat.members[0].id, key, len(PNG)),
    )


def arrange(db: psycopg.Connection[Any], chat: Conversation) -> dict[str, str]:
    """One object of each kind the sweeper meets."""
    keys = {
        "pending upload": f"incoming/{chat.id}/{chat.members[0].id}/{uuid.uuid4()}",
        "recorded file": f"files/{chat.id}/{uuid.uuid4()}/a1",
        "unrecorded file": f"files/{chat.id}/{uuid.uuid4()}/b2",
    }
    for key in keys.values():
        put(key)
    record(db, chat, keys["recorded file"])
    return keys


def remaining() -> set[str]:
    return set(keys_under("incoming/")) | set(keys_under("files/"))


def test_young_objects_are_kept(
    fresh_bucket: str, conversation: Callable[..., Conversation], db: Any
) -> None:
    keys = arrange(db, conversation(1))
    report = files.sweep_orphans()
    assert report == files.SweepReport(incoming_deleted=0, files_deleted=0, files_checked=0)
    assert remaining() == set(keys.values())


def test_old_orphans_are_deleted_and_recorded_files_kept(
    fresh_bucket: str, conversation: Callable[..., Conversation], db: Any
) -> None:
    keys = arrange(db, conversation(1))
    report = files.sweep_orphans(now=datetime.now(UTC) + LATER)
    assert report == files.SweepReport(incoming_deleted=1, files_deleted=1, files_checked=2)
    assert remaining() == {keys["recorded file"]}
    # A second sweep finds nothing more to do.
    again = files.sweep_orphans(now=datetime.now(UTC) + LATER)
    assert (again.incoming_deleted, again.files_deleted) == (0, 0)
    assert remaining() == {keys["recorded file"]}


def test_the_incoming_scope_leaves_completed_files_alone(
    fresh_bucket: str, conversation: Callable[..., Conversation], db: Any
) -> None:
    keys = arrange(db, conversation(1))
    report = files.sweep_orphans(now=datetime.now(UTC) + LATER, scopes=("incoming",))
    assert report.incoming_deleted == 1
    assert report.files_checked == 0
    assert remaining() == {keys["recorded file"], keys["unrecorded file"]}


def test_files_of_a_deleted_conversation_are_swept(
    fresh_bucket: str, conversation: Callable[..., Conversation], db: Any
) -> None:
    chat = conversation(1)
    keys = arrange(db, chat)
    db.execute("DELETE FROM conversations WHERE id = %s", (chat.id,))  # rows cascade
    files.sweep_orphans(now=datetime.now(UTC) + LATER)
    assert remaining() == set()
    assert keys  # all three were there before


def test_many_objects_are_swept_page_by_page(
    fresh_bucket: str, conversation: Callable[..., Conversation]
) -> None:
    chat = conversation(1)
    # More than one listing page (1000 keys) of never-completed uploads.
    for n in range(1005):
        put(f"incoming/{chat.id}/{chat.members[0].id}/{n:05d}")
    report = files.sweep_orphans(now=datetime.now(UTC) + LATER)
    assert report.incoming_deleted == 1005
    assert keys_under("incoming/") == []


def test_the_function_sweeps_with_the_configured_grace(
    fresh_bucket: str,
    conversation: Callable[..., Conversation],
    db: Any,
    file_settings: Callable[..., None],
    function_client: Callable[[str], Any],
) -> None:
    keys = arrange(db, conversation(1))
    event_headers = {
        "ce-specversion": "1.0",
        "ce-type": "dev.knative.sources.ping",
        "ce-source": "tests",
        "ce-id": uuid.uuid4().hex,
    }
    sweeper = function_client("orphan_sweeper")
    # Default grace (an hour): everything is young, nothing goes.
    assert sweeper.post("/", json={}, headers=event_headers).status_code == 200
    assert remaining() == set(keys.values())
    # A data payload narrows the sweep to uploads never completed.
    file_settings(ORPHAN_GRACE_SECONDS="0")
    response = sweeper.post("/", json={"scopes": ["incoming"]}, headers=event_headers)
    assert response.status_code == 200
    assert remaining() == {keys["recorded file"], keys["unrecorded file"]}
    assert sweeper.post("/", json={}, headers=event_headers).status_code == 200
    assert remaining() == {keys["recorded file"]}
