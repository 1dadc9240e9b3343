"""SQL for memberships: who is in a conversation, their role, window and read position.

A member sees the messages with ``joined_seq < seq <= left_seq`` (``left_seq``
NULL while they are a member). Leaving keeps the row, so a former member
still reads what they were entitled to; joining again reopens the window
from the new join. Also the two user lookups membership needs (does this user
exist, who is this username). See docs/messaging.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whatschat.storage.database import Connection


def membership_txn(conn: Connection, conversation_id: int, user_id: int) -> dict[str, Any] | None:
    """The user's membership row joined with its conversation, or None.

    Columns: kind, title, description, last_seq, last_edit_seq, role,
    joined_seq, left_seq, read_seq.
    """
    row: dict[str, Any] | None = conn.execute(
        """
        SELECT c.kind, c.title, c.description, c.last_seq, c.last_edit_seq,
               mb.role, mb.joined_seq, mb.left_seq, mb.read_seq
        FROM members mb JOIN conversations c ON c.id = mb.conversation_id
        WHERE mb.conversation_id = %s AND mb.user_id = %s
        """,
        (conversation_id, user_id),
    ).fetchone()
    return row


def add_txn(
    conn: Connection,
    conversation_id: int,
    roles: Sequence[tuple[int, str]],
    *,
    joined_seq: int,
    read_seq: int,
) -> None:
    """Make each (user_id, role) a member from ``joined_seq``; a former member joins again."""
    conn.execute(
        """
        INSERT INTO members (conversation_id, user_id, role, joined_seq, read_seq)
        SELECT %s, u, r, %s, %s FROM unnest(%s::bigint[], %s::text[]) AS t(u, r)
        ON CONFLICT (conversation_id, user_id) DO UPDATE
        SET role = EXCLUDED.role, joined_seq = EXCLUDED.joined_seq, left_seq = NULL,
            left_at = NULL, read_seq = EXCLUDED.read_seq, joined_at = now()
        """,
        (
            conversation_id,
            joined_seq,
            read_seq,
            [user for user, _ in roles],
            [role for _, role in roles],
        ),
    )


def leave_txn(conn: Connection, conversation_id: int, user_id: int, left_seq: int) -> None:
    """Close the member's window at ``left_seq`` (the seq of the message recording it)."""
    conn.execute(
        """
        UPDATE members SET left_seq = %s, left_at = now()
        WHERE conversation_id = %s AND user_id = %s AND left_seq IS NULL
        """,
        (left_seq, conversation_id, user_id),
    )


def set_role_txn(conn: Connection, conversation_id: int, user_id: int, role: str) -> None:
    conn.execute(
        "UPDATE members SET role = %s WHERE conversation_id = %s AND user_id = %s",
        (role, conversation_id, user_id),
    )


def advance_read_txn(conn: Connection, conversation_id: int, user_id: int, seq: int) -> int | None:
    """Move the read position forward to ``seq`` (never back); the new position, or
    None when it did not move."""
    row: dict[str, Any] | None = conn.execute(
        """
        UPDATE members SET read_seq = %(seq)s
        WHERE conversation_id = %(cid)s AND user_id = %(uid)s AND read_seq < %(seq)s
        RETURNING read_seq
        """,
        {"seq": seq, "cid": conversation_id, "uid": user_id},
    ).fetchone()
    return None if row is None else int(row["read_seq"])


def current_txn(conn: Connection, conversation_id: int) -> list[dict[str, Any]]:
    """Current members, longest-standing first.

    Columns: user_id, username, display_name, role, joined_seq, read_seq, joined_at.
    """
    rows: list[dict[str, Any]] = conn.execute(
        """
        SELECT mb.user_id, u.username, u.display_name, mb.role, mb.joined_seq, mb.read_seq,
               mb.joined_at
        FROM members mb JOIN users u ON u.id = mb.user_id
        WHERE mb.conversation_id = %s AND mb.left_seq IS NULL
        ORDER BY mb.joined_seq, mb.joined_at, mb.user_id
        """,
        (conversation_id,),
    ).fetchall()
    return rows


def counts_txn(conn: Connection, conversation_id: int) -> tuple[int, int]:
    """(current members, current admins)."""
    row: dict[str, Any] | None = conn.execute(
        """
        SELECT count(*) AS members, count(*) FILTER (WHERE role = 'admin') AS admins
        FROM members WHERE conversation_id = %s AND left_seq IS NULL
        """,
        (conversation_id,),
    ).fetchone()
    assert row is not None
    return int(row["members"]), int(row["admins"])


def longest_standing_txn(conn: Connection, conversation_id: int) -> int | None:
    """The current member who joined first (ties: earliest join time, then lowest id)."""
    row: dict[str, Any] | None = conn.execute(
        """
        SELECT user_id FROM members
        WHERE conversation_id = %s AND left_seq IS NULL
        ORDER BY joined_seq, joined_at, user_id
        LIMIT 1
        """,
        (conversation_id,),
    ).fetchone()
    return None if row is None else int(row["user_id"])


def read_positions_txn(
    conn: Connection, conversation_ids: Sequence[int], max_members: int
) -> dict[int, list[tuple[int, int]]]:
    """conversation id -> [(user_id, read_seq)] of its current members, for the
    conversations with at most ``max_members`` current members."""
    rows: list[dict[str, Any]] = conn.execute(
        """
        WITH small AS (
            SELECT conversation_id FROM members
            WHERE conversation_id = ANY(%(ids)s) AND left_seq IS NULL
            GROUP BY conversation_id HAVING count(*) <= %(max)s
        )
        SELECT mb.conversation_id, mb.user_id, mb.read_seq
        FROM members mb JOIN small USING (conversation_id)
        WHERE mb.left_seq IS NULL
        ORDER BY mb.conversation_id, mb.user_id
        """,
        {"ids": list(conversation_ids), "max": max_members},
    ).fetchall()
    found: dict[int, list[tuple[int, int]]] = {}
    for row in rows:
        found.setdefault(int(row["conversation_id"]), []).append(
            (int(row["user_id"]), int(row["read_seq"]))
        )
    return found


def existing_user_ids_txn(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    """Which of these user ids are accounts."""
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT id FROM users WHERE id = ANY(%s)", (list(user_ids),)
    ).fetchall()
    return {int(row["id"]) for row in rows}


def user_id_by_username_txn(conn: Connection, username: str) -> int | None:
    """The account with this username (case-insensitive), or None."""
    row: dict[str, Any] | None = conn.execute(
        "SELECT id FROM users WHERE lower(username) = lower(%s)", (username,)
    ).fetchone()
    return None if row is None else int(row["id"])


def user_ids_by_usernames_txn(conn: Connection, usernames: Sequence[str]) -> dict[str, int]:
    """lower(username) -> id for the usernames that are accounts."""
    rows: list[dict[str, Any]] = conn.execute(
        "SELECT lower(username) AS name, id FROM users WHERE lower(username) = ANY(%s)",
        ([name.lower() for name in usernames],),
    ).fetchall()
    return {str(row["name"]): int(row["id"]) for row in rows}
