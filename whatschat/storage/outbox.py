"""SQL for the outbox: events written with the change they describe.

A sweeper claims rows for publishing by setting ``published_at`` inside a
transaction that also holds the row lock (``FOR UPDATE SKIP LOCKED``): any
number of sweepers never publish the same row twice while its claim is open,
and a claim that is rolled back (Redis down, process killed) leaves the row
for the next sweep. The function that wrote a row publishes it and then marks
it (:func:`mark_published`). See docs/messaging.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whatschat.storage.database import Connection


def insert_txn(conn: Connection, rows: Sequence[tuple[str, bytes]]) -> list[int]:
    """Insert (channel, encoded envelope) rows; return their ids in the given order."""
    if not rows:
        return []
    if len(rows) == 1:
        found: dict[str, Any] | None = conn.execute(
            "INSERT INTO outbox (channel, payload) VALUES (%s, %s) RETURNING id", rows[0]
        ).fetchone()
        assert found is not None
        return [found["id"]]
    found_rows: list[dict[str, Any]] = conn.execute(
        """
        INSERT INTO outbox (channel, payload)
        SELECT channel, payload FROM unnest(%s::text[], %s::bytea[]) WITH ORDINALITY
            AS r(channel, payload, n)
        ORDER BY n
        RETURNING id
        """,
        ([channel for channel, _ in rows], [payload for _, payload in rows]),
    ).fetchall()
    return sorted(row["id"] for row in found_rows)


def mark_published(conn: Connection, ids: Sequence[int]) -> None:
    """Mark rows their writer has just published (no claim: see whatschat.outbox)."""
    if len(ids) == 1:  # a send: a scalar parameter is cheaper to adapt than an array
        conn.execute(
            "UPDATE outbox SET published_at = now() WHERE id = %s AND published_at IS NULL",
            (ids[0],),
        )
        return
    conn.execute(
        "UPDATE outbox SET published_at = now() WHERE id = ANY(%s) AND published_at IS NULL",
        (list(ids),),
    )


def claim_due_txn(conn: Connection, min_age_seconds: float, limit: int) -> list[dict[str, Any]]:
    """Claim up to ``limit`` unpublished rows older than ``min_age_seconds``; oldest first."""
    rows: list[dict[str, Any]] = conn.execute(
        """
        UPDATE outbox SET published_at = now()
        WHERE id IN (
            SELECT id FROM outbox
            WHERE published_at IS NULL
              AND created_at <= now() - make_interval(secs => %s)
            ORDER BY id
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, channel, payload
        """,
        (min_age_seconds, limit),
    ).fetchall()
    return sorted(rows, key=lambda row: row["id"])


def delete_published_txn(conn: Connection, older_than_seconds: float, limit: int) -> int:
    """Delete up to ``limit`` published rows created more than ``older_than_seconds`` ago.

    Looks only at the ``limit`` oldest rows (primary key order), so the cost
    stays bounded however large the table is.
    """
    cursor = conn.execute(
        """
        DELETE FROM outbox
        WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT %s)
          AND published_at IS NOT NULL
          AND created_at < now() - make_interval(secs => %s)
        """,
        (limit, older_than_seconds),
    )
    return cursor.rowcount


def unpublished_count_txn(conn: Connection) -> int:
    """How many rows wait for publishing (health and tests)."""
    row: dict[str, Any] | None = conn.execute(
        "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
    ).fetchone()
    assert row is not None
    return int(row["n"])
