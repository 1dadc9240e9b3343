"""SQL for messages: reading pages by sequence (history, sync, gateway replay).

Writes (send, edit, delete) live here too. Every read takes the member's
visibility window (``joined_seq < seq <= left_seq``) so a removed member never
reads what was sent after they left. See docs/schema.md.
"""

from __future__ import annotations

from typing import Any

from whatschat.storage.database import Connection

# Columns that whatschat.schemas.message_view expects.
MESSAGE_COLUMNS = """
    m.id, m.conversation_id, m.seq, m.sender_id, m.client_msg_id, m.kind, m.body,
    m.reply_to_seq, m.attachment_id, m.system_event, m.created_at, m.edited_at,
    m.deleted_at,
    a.file_name AS attachment_file_name, a.content_type AS attachment_content_type,
    a.size_bytes AS attachment_size_bytes
"""


def fetch_after_txn(
    conn: Connection,
    conversation_id: int,
    after_seq: int,
    limit: int,
    *,
    visible_from: int = 0,
    visible_to: int | None = None,
) -> list[dict[str, Any]]:
    """Messages with ``seq > after_seq`` in ascending order, at most ``limit``.

    ``visible_from``/``visible_to`` are the member's joined_seq/left_seq.
    """
    rows = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}
        FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id
        WHERE m.conversation_id = %(cid)s
          AND m.seq > greatest(%(after)s, %(from)s)
          AND (%(to)s::bigint IS NULL OR m.seq <= %(to)s::bigint)
        ORDER BY m.seq
        LIMIT %(limit)s
        """,  # noqa: S608 - only our constant column list is formatted in
        {
            "cid": conversation_id,
            "after": after_seq,
            "from": visible_from,
            "to": visible_to,
            "limit": limit,
        },
    ).fetchall()
    return list(rows)


def fetch_before_txn(
    conn: Connection,
    conversation_id: int,
    before_seq: int,
    limit: int,
    *,
    visible_from: int = 0,
    visible_to: int | None = None,
) -> list[dict[str, Any]]:
    """Messages with ``seq < before_seq``, newest first, at most ``limit``."""
    rows = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}
        FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id
        WHERE m.conversation_id = %(cid)s
          AND m.seq < %(before)s
          AND m.seq > %(from)s
          AND (%(to)s::bigint IS NULL OR m.seq <= %(to)s::bigint)
        ORDER BY m.seq DESC
        LIMIT %(limit)s
        """,  # noqa: S608 - only our constant column list is formatted in
        {
            "cid": conversation_id,
            "before": before_seq,
            "from": visible_from,
            "to": visible_to,
            "limit": limit,
        },
    ).fetchall()
    return list(rows)


def memberships_txn(conn: Connection, user_id: int) -> list[dict[str, Any]]:
    """Every conversation the user belongs to now, with their window and the last seq.

    Rows: conversation_id, role, joined_seq, left_seq, read_seq, last_seq.
    """
    rows = conn.execute(
        """
        SELECT mb.conversation_id, mb.role, mb.joined_seq, mb.left_seq, mb.read_seq,
               c.last_seq
        FROM members mb JOIN conversations c ON c.id = mb.conversation_id
        WHERE mb.user_id = %s AND mb.left_seq IS NULL
        ORDER BY mb.conversation_id
        """,
        (user_id,),
    ).fetchall()
    return list(rows)
