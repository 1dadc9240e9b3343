"""Shapes shared by the HTTP API, the events and the gateway's replay.

A message looks the same in a history page, a sync answer, a
``message.created`` event and a gateway replay: :class:`MessageView`, built
from a storage row by :func:`message_view`. See docs/events.md.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class AttachmentView(BaseModel):
    """A file attached to a message; download it through GET /v1/attachments/{id}."""

    id: uuid.UUID
    file_name: str
    content_type: str
    size_bytes: int


class MessageView(BaseModel):
    """One message of a conversation. ``seq`` is gap-free per conversation."""

    id: int
    conversation_id: int
    seq: int
    sender_id: int | None  # None for system messages
    client_msg_id: str | None
    kind: Literal["text", "file", "system"]
    text: str | None  # None when deleted or for file/system messages without text
    reply_to_seq: int | None
    attachment: AttachmentView | None
    system: dict[str, Any] | None  # what a system message records (e.g. member added)
    created_at: datetime
    edited_at: datetime | None
    deleted: bool


def message_view(row: dict[str, Any]) -> MessageView:
    """Build the view from a row of ``whatschat.storage.messages`` (MESSAGE_COLUMNS)."""
    attachment = None
    if row.get("attachment_id") is not None and row.get("attachment_file_name") is not None:
        attachment = AttachmentView(
            id=row["attachment_id"],
            file_name=row["attachment_file_name"],
            content_type=row["attachment_content_type"],
            size_bytes=row["attachment_size_bytes"],
        )
    deleted = row["deleted_at"] is not None
    return MessageView(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        client_msg_id=row["client_msg_id"],
        kind=row["kind"],
        text=None if deleted else row["body"],
        reply_to_seq=row["reply_to_seq"],
        attachment=None if deleted else attachment,
        system=row["system_event"],
        created_at=row["created_at"],
        edited_at=row["edited_at"],
        deleted=deleted,
    )
