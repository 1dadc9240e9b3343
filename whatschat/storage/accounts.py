"""SQL of user accounts (the ``users`` table). Domain logic is in whatschat/accounts.py.

Usernames are unique case-insensitively (the ``users_username_lower_key``
index); every lookup compares ``lower(username)`` so it uses that index.
See docs/auth.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from whatschat.storage.database import Connection


@dataclass(frozen=True)
class Account:
    """One row of ``users``."""

    id: int
    username: str  # as the user typed it at registration (case kept)
    display_name: str
    password_hash: str  # argon2id PHC string
    created_at: datetime
    updated_at: datetime


def _account(row: dict[str, Any] | None) -> Account | None:
    return Account(**row) if row is not None else None


def insert_account_txn(
    conn: Connection, username: str, display_name: str, password_hash: str
) -> Account | None:
    """Insert a user; None when the username is taken (in any letter case)."""
    row = conn.execute(
        "INSERT INTO users (username, display_name, password_hash) VALUES (%s, %s, %s)"
        " ON CONFLICT DO NOTHING"
        " RETURNING id, username, display_name, password_hash, created_at, updated_at",
        (username, display_name, password_hash),
    ).fetchone()
    return _account(row)


def account_by_username(conn: Connection, username: str) -> Account | None:
    """The user whose username equals ``username`` ignoring case."""
    row = conn.execute(
        "SELECT id, username, display_name, password_hash, created_at, updated_at"
        " FROM users WHERE lower(username) = lower(%s)",
        (username,),
    ).fetchone()
    return _account(row)


def account_by_id(conn: Connection, user_id: int) -> Account | None:
    row = conn.execute(
        "SELECT id, username, display_name, password_hash, created_at, updated_at"
        " FROM users WHERE id = %s",
        (user_id,),
    ).fetchone()
    return _account(row)


def update_display_name_txn(conn: Connection, user_id: int, display_name: str) -> Account | None:
    """Set the display name; None when the user does not exist."""
    row = conn.execute(
        "UPDATE users SET display_name = %s, updated_at = now() WHERE id = %s"
        " RETURNING id, username, display_name, password_hash, created_at, updated_at",
        (display_name, user_id),
    ).fetchone()
    return _account(row)


def update_password_hash_txn(conn: Connection, user_id: int, password_hash: str) -> None:
    """Replace the stored hash (an upgrade to the current argon2 parameters)."""
    conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
        (password_hash, user_id),
    )
