"""SQL of refresh-token families (``refresh_families``, ``refresh_tokens``).

Domain logic (rotation, reuse detection) is in whatschat/sessions.py; the
design is in docs/auth.md. Tokens are stored only as SHA-256 digests.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from whatschat.storage.database import Connection


@dataclass(frozen=True)
class PresentedToken:
    """A stored refresh token with its family and user, locked for this transaction."""

    token_hash: bytes
    family_id: uuid.UUID
    expires_at: datetime
    rotated_at: datetime | None  # set once exchanged: presenting it again is reuse
    family_revoked_at: datetime | None
    user_id: int
    username: str
    display_name: str


def insert_family_txn(
    conn: Connection, family_id: uuid.UUID, user_id: int, device_name: str
) -> None:
    conn.execute(
        "INSERT INTO refresh_families (id, user_id, device_name) VALUES (%s, %s, %s)",
        (family_id, user_id, device_name),
    )


def insert_token_txn(
    conn: Connection, token_hash: bytes, family_id: uuid.UUID, expires_at: datetime
) -> None:
    conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at) VALUES (%s, %s, %s)",
        (token_hash, family_id, expires_at),
    )


def lock_token_txn(conn: Connection, token_hash: bytes) -> PresentedToken | None:
    """Find a token and lock it and its family until the transaction ends.

    Locking both rows makes two concurrent exchanges of the same token run one
    after the other: the second sees ``rotated_at`` set (PostgreSQL re-reads
    locked rows after waiting) and is treated as reuse.
    """
    row = conn.execute(
        "SELECT t.token_hash, t.family_id, t.expires_at, t.rotated_at,"
        " f.revoked_at AS family_revoked_at, u.id AS user_id, u.username, u.display_name"
        " FROM refresh_tokens t"
        " JOIN refresh_families f ON f.id = t.family_id"
        " JOIN users u ON u.id = f.user_id"
        " WHERE t.token_hash = %s"
        " FOR UPDATE OF t, f",
        (token_hash,),
    ).fetchone()
    return PresentedToken(**row) if row is not None else None  # type: ignore[arg-type]


def mark_rotated_txn(conn: Connection, token_hash: bytes) -> None:
    conn.execute(
        "UPDATE refresh_tokens SET rotated_at = now() WHERE token_hash = %s", (token_hash,)
    )


def touch_family_txn(conn: Connection, family_id: uuid.UUID) -> None:
    """Record use, and drop the family's expired tokens (they can never be exchanged)."""
    conn.execute("UPDATE refresh_families SET last_used_at = now() WHERE id = %s", (family_id,))
    conn.execute(
        "DELETE FROM refresh_tokens WHERE family_id = %s AND expires_at < now()", (family_id,)
    )


def family_of_token(conn: Connection, token_hash: bytes) -> uuid.UUID | None:
    row = conn.execute(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = %s", (token_hash,)
    ).fetchone()
    if row is None:
        return None
    family_id = row["family_id"]
    assert isinstance(family_id, uuid.UUID)
    return family_id


def revoke_family_txn(conn: Connection, family_id: uuid.UUID, reason: str) -> bool:
    """Revoke a family (every token in it stops working); False if it already was."""
    row = conn.execute(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = %s"
        " WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (reason, family_id),
    ).fetchone()
    return row is not None
