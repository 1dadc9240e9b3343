"""SQL for messages: reading pages by sequence (history, sync, gateway replay)
and writing them (send, edit, delete).

Every read takes the member's visibility window (``joined_seq < seq <=
left_seq``) so a removed member never reads what was sent after they left.
Writes run inside the caller's transaction, after the conversation row was
locked by ``storage.conversations.take_seqs_txn``/``take_edit_seq_txn``.
See docs/schema.md and docs/messaging.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg.errors
from psycopg.types.json import Jsonb

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


class DuplicateClientMsgId(Exception):
    """The sender already has a message with this client_msg_id (a concurrent retry)."""


def send_context_txn(
    conn: Connection, conversation_id: int, sender_id: int, client_msg_id: str
) -> dict[str, Any]:
    """What a send checks: the sender's membership and an earlier message with
    the same client_msg_id.

    Columns: is_member_row, joined_seq, left_seq, dup_conversation_id, dup_seq
    (NULLs when absent).
    """
    row: dict[str, Any] | None = conn.execute(
        """
        SELECT mb.user_id IS NOT NULL AS is_member_row, mb.joined_seq, mb.left_seq,
               dup.conversation_id AS dup_conversation_id, dup.seq AS dup_seq
        FROM (SELECT 1) AS one
        LEFT JOIN members mb ON mb.conversation_id = %(cid)s AND mb.user_id = %(uid)s
        LEFT JOIN messages dup ON dup.sender_id = %(uid)s AND dup.client_msg_id = %(cmid)s
        """,
        {"cid": conversation_id, "uid": sender_id, "cmid": client_msg_id},
    ).fetchone()
    assert row is not None
    return row


def lock_for_send_txn(
    conn: Connection, conversation_id: int, sender_id: int, client_msg_id: str
) -> dict[str, Any] | None:
    """Take the conversation's next seq (locking its row until commit) and read
    what the send checks, in one statement; None when the conversation does not exist.

    Columns: last_seq (the seq taken), created_at (the transaction's time),
    message_id (the new message's id, taken now so the event can be built
    before the insert), is_member_row, joined_seq, left_seq,
    dup_conversation_id, dup_seq.

    The membership and the earlier send are read from the statement's
    snapshot, which may predate a change committed while we waited for the
    lock: :func:`insert_sent_txn` re-checks membership, and a concurrent retry
    surfaces as :class:`DuplicateClientMsgId`.
    """
    row: dict[str, Any] | None = conn.execute(
        """
        WITH c AS (
            UPDATE conversations SET last_seq = last_seq + 1, updated_at = now()
            WHERE id = %(cid)s
            RETURNING last_seq
        )
        SELECT c.last_seq, now() AS created_at,
               nextval(pg_get_serial_sequence('messages', 'id')) AS message_id,
               mb.user_id IS NOT NULL AS is_member_row, mb.joined_seq, mb.left_seq,
               dup.conversation_id AS dup_conversation_id, dup.seq AS dup_seq
        FROM c
        LEFT JOIN members mb ON mb.conversation_id = %(cid)s AND mb.user_id = %(uid)s
        LEFT JOIN messages dup ON dup.sender_id = %(uid)s AND dup.client_msg_id = %(cmid)s
        """,
        {"cid": conversation_id, "uid": sender_id, "cmid": client_msg_id},
    ).fetchone()
    return row


def insert_sent_txn(
    conn: Connection,
    row: dict[str, Any],
    *,
    channel: str,
    payload: bytes,
) -> int | None:
    """Insert a sent message (a MESSAGE_COLUMNS row built by the caller) and its
    outbox event in one statement; return the outbox row id.

    The sender's read position moves to the message. Nothing is inserted and
    None returned when the sender is no longer a member (removed while the
    send waited for the conversation lock). Raises :class:`DuplicateClientMsgId`.
    """
    try:
        found: dict[str, Any] | None = conn.execute(
            """
            WITH m AS (
                INSERT INTO messages (id, conversation_id, seq, sender_id, client_msg_id, kind,
                                      body, reply_to_seq, attachment_id, created_at)
                OVERRIDING SYSTEM VALUE
                SELECT %(id)s, %(cid)s, %(seq)s, %(sender)s, %(cmid)s, %(kind)s, %(body)s,
                       %(reply)s, %(attachment)s, %(created_at)s
                WHERE EXISTS (
                    SELECT 1 FROM members
                    WHERE conversation_id = %(cid)s AND user_id = %(sender)s
                      AND left_seq IS NULL
                )
                RETURNING id
            ), sender_read AS (
                UPDATE members SET read_seq = %(seq)s
                WHERE conversation_id = %(cid)s AND user_id = %(sender)s AND read_seq < %(seq)s
                  AND EXISTS (SELECT 1 FROM m)
            )
            INSERT INTO outbox (channel, payload)
            SELECT %(channel)s, %(payload)s FROM m
            RETURNING id
            """,
            {
                "id": row["id"],
                "cid": row["conversation_id"],
                "seq": row["seq"],
                "sender": row["sender_id"],
                "cmid": row["client_msg_id"],
                "kind": row["kind"],
                "body": row["body"],
                "reply": row["reply_to_seq"],
                "attachment": row["attachment_id"],
                "created_at": row["created_at"],
                "channel": channel,
                "payload": payload,
            },
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "messages_sender_client_msg_id_key":
            raise DuplicateClientMsgId(row["client_msg_id"]) from exc
        raise
    return None if found is None else int(found["id"])


def attachment_txn(conn: Connection, attachment_id: uuid.UUID) -> dict[str, Any] | None:
    """The attachment's conversation_id, uploader_id, file_name, content_type,
    size_bytes; or None."""
    row: dict[str, Any] | None = conn.execute(
        """
        SELECT conversation_id, uploader_id, file_name, content_type, size_bytes
        FROM attachments WHERE id = %s
        """,
        (attachment_id,),
    ).fetchone()
    return row


def insert_txn(
    conn: Connection,
    *,
    conversation_id: int,
    seq: int,
    kind: str,
    sender_id: int | None = None,
    client_msg_id: str | None = None,
    body: str | None = None,
    reply_to_seq: int | None = None,
    attachment_id: uuid.UUID | None = None,
    system_event: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Insert one message at ``seq``; return it as a MESSAGE_COLUMNS row.

    The sender has read their own conversation up to their message, so their
    read position moves to ``seq`` in the same statement.
    Raises :class:`DuplicateClientMsgId` (the transaction is then aborted).
    """
    try:
        row: dict[str, Any] | None = conn.execute(
            f"""
            WITH m AS (
                INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body,
                                      reply_to_seq, attachment_id, system_event)
                VALUES (%(cid)s, %(seq)s, %(sender)s, %(cmid)s, %(kind)s, %(body)s, %(reply)s,
                        %(attachment)s, %(system)s)
                RETURNING *
            ), sender_read AS (
                UPDATE members SET read_seq = %(seq)s
                WHERE conversation_id = %(cid)s AND user_id = %(sender)s AND read_seq < %(seq)s
            )
            SELECT {MESSAGE_COLUMNS}
            FROM m LEFT JOIN attachments a ON a.id = m.attachment_id
            """,  # noqa: S608 - only our constant column list is formatted in
            {
                "cid": conversation_id,
                "seq": seq,
                "sender": sender_id,
                "cmid": client_msg_id,
                "kind": kind,
                "body": body,
                "reply": reply_to_seq,
                "attachment": attachment_id,
                "system": Jsonb(system_event) if system_event is not None else None,
            },
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "messages_sender_client_msg_id_key":
            raise DuplicateClientMsgId(client_msg_id) from exc
        raise
    assert row is not None
    return row


def get_txn(conn: Connection, conversation_id: int, seq: int) -> dict[str, Any] | None:
    """One message as a MESSAGE_COLUMNS row (plus its edit_seq), or None."""
    row: dict[str, Any] | None = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}, m.edit_seq
        FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id
        WHERE m.conversation_id = %s AND m.seq = %s
        """,  # noqa: S608 - only our constant column list is formatted in
        (conversation_id, seq),
    ).fetchone()
    return row


def edit_txn(
    conn: Connection, conversation_id: int, seq: int, body: str, edit_seq: int
) -> dict[str, Any]:
    """Replace the text of a message; return the new row."""
    return _update_returning(
        conn,
        "body = %(body)s, edited_at = now(), edit_seq = %(edit_seq)s",
        {"cid": conversation_id, "seq": seq, "body": body, "edit_seq": edit_seq},
    )


def delete_txn(conn: Connection, conversation_id: int, seq: int, edit_seq: int) -> dict[str, Any]:
    """Leave a tombstone: text and attachment gone, deleted_at set; return the new row."""
    return _update_returning(
        conn,
        "body = NULL, attachment_id = NULL, deleted_at = now(), edit_seq = %(edit_seq)s",
        {"cid": conversation_id, "seq": seq, "edit_seq": edit_seq},
    )


def _update_returning(conn: Connection, assignments: str, params: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] | None = conn.execute(
        f"""
        WITH m AS (
            UPDATE messages SET {assignments}
            WHERE conversation_id = %(cid)s AND seq = %(seq)s
            RETURNING *
        )
        SELECT {MESSAGE_COLUMNS} FROM m LEFT JOIN attachments a ON a.id = m.attachment_id
        """,  # noqa: S608 - only our constant SQL fragments are formatted in
        params,
    ).fetchone()
    assert row is not None
    return row


def fetch_at_txn(conn: Connection, positions: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """The messages at these (conversation_id, seq) positions (e.g. last messages)."""
    if not positions:
        return []
    rows: list[dict[str, Any]] = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}
        FROM messages m LEFT JOIN attachments a ON a.id = m.attachment_id
        WHERE (m.conversation_id, m.seq) IN (
            SELECT * FROM unnest(%s::bigint[], %s::bigint[])
        )
        """,  # noqa: S608 - only our constant column list is formatted in
        _columns(positions),
    ).fetchall()
    return rows


def fetch_after_many_txn(
    conn: Connection, windows: Sequence[tuple[int, int, int]], limit: int
) -> list[dict[str, Any]]:
    """For each (conversation_id, after_seq, up_to_seq): the first ``limit`` messages
    with ``after_seq < seq <= up_to_seq``, ordered by conversation then seq."""
    if not windows:
        return []
    rows: list[dict[str, Any]] = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}
        FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS w(cid, after_seq, up_to)
        CROSS JOIN LATERAL (
            SELECT * FROM messages mm
            WHERE mm.conversation_id = w.cid AND mm.seq > w.after_seq AND mm.seq <= w.up_to
            ORDER BY mm.seq
            LIMIT %s
        ) m
        LEFT JOIN attachments a ON a.id = m.attachment_id
        ORDER BY m.conversation_id, m.seq
        """,  # noqa: S608 - only our constant column list is formatted in
        (*_columns(windows), limit),
    ).fetchall()
    return rows


def fetch_edited_many_txn(
    conn: Connection, windows: Sequence[tuple[int, int, int, int]], limit: int
) -> list[dict[str, Any]]:
    """For each (conversation_id, after_edit_seq, visible_from, visible_to): the first
    ``limit`` messages edited or deleted after ``after_edit_seq`` within the window
    ``visible_from < seq <= visible_to``, in edit order. Rows carry ``edit_seq``."""
    if not windows:
        return []
    rows: list[dict[str, Any]] = conn.execute(
        f"""
        SELECT {MESSAGE_COLUMNS}, m.edit_seq
        FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[])
            AS w(cid, after_edit, visible_from, visible_to)
        CROSS JOIN LATERAL (
            SELECT * FROM messages mm
            WHERE mm.conversation_id = w.cid AND mm.edit_seq > w.after_edit
              AND mm.seq > w.visible_from AND mm.seq <= w.visible_to
            ORDER BY mm.edit_seq
            LIMIT %s
        ) m
        LEFT JOIN attachments a ON a.id = m.attachment_id
        ORDER BY m.conversation_id, m.edit_seq
        """,  # noqa: S608 - only our constant column list is formatted in
        (*_columns(windows), limit),
    ).fetchall()
    return rows


def _columns(rows: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Tuples as one list per position: array parameters for ``unnest``."""
    return [list(column) for column in zip(*rows, strict=True)]
