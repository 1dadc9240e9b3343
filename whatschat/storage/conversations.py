"""SQL for conversations: creating them, taking sequence numbers, listing a user's.

Every write that gives a conversation a new message takes its sequence
number with :func:`take_seqs_txn`: one ``UPDATE ... RETURNING`` that locks the
conversation row until commit, so sequences are gap-free (a rolled-back
transaction gives its number back) and assigned in commit order. Edits and
deletions take an edit sequence the same way (:func:`take_edit_seq_txn`).
See docs/messaging.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whatschat.storage.database import Connection

# The caller's view of a conversation: the conversation, their membership,
# and for a direct conversation the other user (peer_*).
_FOR_USER = """
    SELECT c.id, c.kind, c.title, c.description, c.created_by, c.created_at, c.updated_at,
           c.last_seq, c.last_edit_seq,
           mb.role, mb.joined_seq, mb.left_seq, mb.read_seq,
           peer.id AS peer_id, peer.username AS peer_username,
           peer.display_name AS peer_display_name
    FROM members mb
    JOIN conversations c ON c.id = mb.conversation_id
    LEFT JOIN LATERAL (
        SELECT u.id, u.username, u.display_name
        FROM members o JOIN users u ON u.id = o.user_id
        WHERE c.kind = 'direct' AND o.conversation_id = c.id AND o.user_id <> mb.user_id
        LIMIT 1
    ) peer ON true
    WHERE mb.user_id = %(uid)s
"""


def take_seqs_txn(conn: Connection, conversation_id: int, count: int = 1) -> dict[str, Any] | None:
    """Lock the conversation and take the next ``count`` sequence numbers.

    Returns the row (id, kind, last_seq, last_edit_seq, title, description)
    where ``last_seq`` is the last number taken: the numbers are
    ``last_seq - count + 1 .. last_seq``. None when the conversation does not
    exist. Also marks the conversation active now (list order).
    """
    row: dict[str, Any] | None = conn.execute(
        """
        UPDATE conversations SET last_seq = last_seq + %s, updated_at = now()
        WHERE id = %s
        RETURNING id, kind, last_seq, last_edit_seq, title, description
        """,
        (count, conversation_id),
    ).fetchone()
    return row


def take_edit_seq_txn(conn: Connection, conversation_id: int) -> int | None:
    """Lock the conversation and take its next edit sequence number (None: no such row)."""
    row: dict[str, Any] | None = conn.execute(
        """
        UPDATE conversations SET last_edit_seq = last_edit_seq + 1
        WHERE id = %s RETURNING last_edit_seq
        """,
        (conversation_id,),
    ).fetchone()
    return None if row is None else int(row["last_edit_seq"])


def insert_direct_txn(conn: Connection, direct_key: str, created_by: int) -> int | None:
    """Create the direct conversation for ``direct_key``; None when it already exists."""
    row: dict[str, Any] | None = conn.execute(
        """
        INSERT INTO conversations (kind, direct_key, created_by) VALUES ('direct', %s, %s)
        ON CONFLICT (direct_key) DO NOTHING
        RETURNING id
        """,
        (direct_key, created_by),
    ).fetchone()
    return None if row is None else int(row["id"])


def find_direct_txn(conn: Connection, direct_key: str) -> int | None:
    row: dict[str, Any] | None = conn.execute(
        "SELECT id FROM conversations WHERE direct_key = %s", (direct_key,)
    ).fetchone()
    return None if row is None else int(row["id"])


def insert_group_txn(
    conn: Connection, title: str, description: str | None, created_by: int, last_seq: int
) -> int:
    """Create a group whose first ``last_seq`` sequence numbers are already taken."""
    row: dict[str, Any] | None = conn.execute(
        """
        INSERT INTO conversations (kind, title, description, created_by, last_seq)
        VALUES ('group', %s, %s, %s, %s)
        RETURNING id
        """,
        (title, description, created_by, last_seq),
    ).fetchone()
    assert row is not None
    return int(row["id"])


def update_group_txn(
    conn: Connection, conversation_id: int, title: str, description: str | None
) -> None:
    conn.execute(
        "UPDATE conversations SET title = %s, description = %s WHERE id = %s",
        (title, description, conversation_id),
    )


def for_user_txn(
    conn: Connection,
    user_id: int,
    *,
    ids: Sequence[int] | None = None,
    current_only: bool = True,
) -> list[dict[str, Any]]:
    """The user's conversations, most recently active first.

    ``ids`` restricts to those conversations; ``current_only`` leaves out
    the ones the user left (a left conversation keeps its visibility window).
    """
    sql = _FOR_USER
    if current_only:
        sql += " AND mb.left_seq IS NULL"  # the partial index members_user_active_idx
    if ids is not None:
        sql += " AND mb.conversation_id = ANY(%(ids)s)"
    sql += " ORDER BY c.updated_at DESC, c.id DESC"
    rows: list[dict[str, Any]] = conn.execute(
        sql, {"uid": user_id, "ids": list(ids) if ids is not None else None}
    ).fetchall()
    return rows


def positions_txn(conn: Connection, ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """conversation id -> (last_seq, last_edit_seq) for the ids that exist here.

    Read on the replica, it says how far the replica has replayed.
    """
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT id, last_seq, last_edit_seq FROM conversations WHERE id = ANY(%s)", (list(ids),)
    ).fetchall()
    return {int(r["id"]): (int(r["last_seq"]), int(r["last_edit_seq"])) for r in rows}
