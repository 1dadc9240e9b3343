"""SQL of the files feature: attachment rows and who may see them.

The domain operations are in :mod:`whatschat.files`; docs/files.md explains
the flow. Each helper runs on a connection the caller opened
(``database.primary()`` or ``database.replica()``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from whatschat.storage.database import Connection


@dataclass(frozen=True)
class AttachmentRow:
    """One row of ``attachments``."""

    id: uuid.UUID
    conversation_id: int
    uploader_id: int
    object_key: str
    file_name: str
    content_type: str
    size_bytes: int
    created_at: datetime | None = None  # set by the database


def _row(found: dict[str, Any]) -> AttachmentRow:
    return AttachmentRow(**found)


def insert(conn: Connection, row: AttachmentRow) -> AttachmentRow | None:
    """Record the attachment; None when a row with this id already exists
    (a completion that raced another one for the same upload)."""
    found = conn.execute(
        """
        INSERT INTO attachments
            (id, conversation_id, uploader_id, object_key, file_name, content_type, size_bytes)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (id) DO NOTHING
        RETURNING id, conversation_id, uploader_id, object_key, file_name, content_type,
                  size_bytes, created_at
        """,
        (
            row.id,
            row.conversation_id,
            row.uploader_id,
            row.object_key,
            row.file_name,
            row.content_type,
            row.size_bytes,
        ),
    ).fetchone()
    return _row(found) if found else None


def get(conn: Connection, attachment_id: uuid.UUID) -> AttachmentRow | None:
    """The attachment with this id, whoever may see it."""
    found = conn.execute(
        "SELECT id, conversation_id, uploader_id, object_key, file_name, content_type,"
        " size_bytes, created_at FROM attachments WHERE id = %s",
        (attachment_id,),
    ).fetchone()
    return _row(found) if found else None


def get_visible(conn: Connection, attachment_id: uuid.UUID, user_id: int) -> AttachmentRow | None:
    """The attachment if ``user_id`` may download it, else None.

    They may when they uploaded it, or when a message carrying it (not
    deleted) is in a conversation they are a current member of, sent after
    they joined. Uses messages_attachment_idx and the members primary key.
    """
    found = conn.execute(
        """
        SELECT a.id, a.conversation_id, a.uploader_id, a.object_key, a.file_name,
               a.content_type, a.size_bytes, a.created_at
        FROM attachments a
        WHERE a.id = %(id)s
          AND (
            a.uploader_id = %(user)s
            OR EXISTS (
              SELECT 1
              FROM messages m
              JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id = %(user)s
              WHERE m.attachment_id = a.id
                AND m.deleted_at IS NULL
                AND mb.left_seq IS NULL
                AND m.seq > mb.joined_seq
            )
          )
        """,
        {"id": attachment_id, "user": user_id},
    ).fetchone()
    return _row(found) if found else None


def recorded_keys(conn: Connection, keys: list[str]) -> set[str]:
    """Which of ``keys`` an attachment row names (the orphan sweeper's question)."""
    rows = conn.execute(
        "SELECT object_key FROM attachments WHERE object_key = ANY(%s)", (keys,)
    ).fetchall()
    return {str(row["object_key"]) for row in rows}
