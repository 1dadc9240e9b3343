"""Helpers shared by the files tests: sample files, SQL arrangements, S3 uploads.

Conversations, members and messages are arranged with SQL directly: these
tests are about files, and the conversation functions have their own tests.
Uploads are real multipart POSTs (``requests``) to the presigned form. The
fixtures built on these are in tests/files_fixtures.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
import requests

from tests.conftest import AppUser
from whatschat.config import get_settings
from whatschat.storage import objects

# A complete 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
# A minimal one-page PDF.
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 72 72]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


@dataclass
class Conversation:
    id: int
    members: list[AppUser]


def add_member(db: psycopg.Connection[Any], conversation_id: int, user: AppUser) -> None:
    """Join ``user`` now: they see messages after the conversation's last sequence."""
    db.execute(
        "INSERT INTO members (conversation_id, user_id, joined_seq)"
        " SELECT id, %s, last_seq FROM conversations WHERE id = %s",
        (user.id, conversation_id),
    )


def send_file_message(
    db: psycopg.Connection[Any], conversation_id: int, sender: AppUser, attachment_id: str
) -> int:
    """A file message in the conversation with the next sequence number; returns it."""
    row = db.execute(
        """
        WITH next AS (
            UPDATE conversations SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq
        )
        INSERT INTO messages (conversation_id, seq, sender_id, kind, attachment_id)
        SELECT %s, last_seq, %s, 'file', %s FROM next
        RETURNING seq
        """,
        (conversation_id, conversation_id, sender.id, attachment_id),
    ).fetchone()
    assert row is not None
    seq: int = row[0]
    return seq


def upload_to_s3(ticket: dict[str, Any], data: bytes, **field_changes: str) -> requests.Response:
    """POST ``data`` to the presigned form as a browser would (fields, then ``file``)."""
    fields = {**ticket["fields"], **field_changes}
    return requests.post(
        ticket["url"],
        data=fields,
        files={"file": (ticket["file_name"], data, fields.get("Content-Type"))},
        timeout=10,
    )


def attachment_count(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM attachments").fetchone()
    assert row is not None
    count: int = row[0]
    return count


def keys_under(prefix: str) -> list[str]:
    """Every key in the configured bucket under ``prefix``."""
    found = objects.client().list_objects_v2(Bucket=get_settings().s3_bucket, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]
