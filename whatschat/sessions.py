"""Sessions: one refresh-token family per logged-in device, rotated on every use.

A login starts a family and hands out its first refresh token (an opaque
random value; only its SHA-256 digest is stored). Each refresh exchanges the
presented token for a new one and marks the old one rotated. Presenting a
rotated token again means two parties hold the family's tokens (one of them
stole it): the whole family is revoked, so the thief's and the owner's newest
tokens both stop working and the owner logs in again. Logout revokes the
family. See docs/auth.md (sessions).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from whatschat import tokens
from whatschat.config import get_settings
from whatschat.problems import Problem
from whatschat.storage import database
from whatschat.storage import sessions as store
from whatschat.storage.database import Connection

logger = logging.getLogger(__name__)

# Refresh tokens start with this so secret scanners and people recognize them.
TOKEN_PREFIX = "wcr_"  # noqa: S105 - a public prefix, not a secret


class RefreshTokenBody(BaseModel):
    """A refresh token presented to refresh or logout."""

    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(min_length=1, max_length=256, repr=False)


@dataclass(frozen=True)
class Grant:
    """What a login or refresh hands the client: tokens, and whose they are."""

    user_id: int
    username: str
    display_name: str
    access_token: str
    expires_in: int  # seconds the access token is valid
    refresh_token: str
    refresh_expires_in: int  # seconds the refresh token is valid


def _digest(refresh_token: str) -> bytes:
    # A fast hash is enough: the token is 256 random bits, not a password.
    return hashlib.sha256(refresh_token.encode()).digest()


def _new_refresh_token_txn(conn: Connection, family_id: uuid.UUID) -> tuple[str, int]:
    ttl = get_settings().refresh_token_ttl_seconds
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.insert_token_txn(
        conn, _digest(token), family_id, datetime.now(UTC) + timedelta(seconds=ttl)
    )
    return token, ttl


def _grant(conn: Connection, family_id: uuid.UUID, user_id: int, username: str, name: str) -> Grant:
    refresh_token, refresh_ttl = _new_refresh_token_txn(conn, family_id)
    access_token, access_ttl = tokens.issue_access_token(user_id, username)
    return Grant(user_id, username, name, access_token, access_ttl, refresh_token, refresh_ttl)


def start_txn(
    conn: Connection, *, user_id: int, username: str, display_name: str, device_name: str
) -> Grant:
    """Start a family for a device that just logged in; return its first tokens."""
    family_id = uuid.uuid4()
    store.insert_family_txn(conn, family_id, user_id, device_name)
    return _grant(conn, family_id, user_id, username, display_name)


def rotate(refresh_token: str) -> Grant:
    """Exchange a refresh token for new tokens.

    Raises a 401 ``invalid-refresh-token`` problem when the token is unknown,
    expired or revoked, and when it was already exchanged (after revoking its
    family, which is committed before the error is raised).
    """
    digest = _digest(refresh_token)
    refusal = ""
    grant: Grant | None = None
    with database.primary() as conn:
        presented = store.lock_token_txn(conn, digest)
        if presented is None:
            refusal = "The refresh token is not known"
        elif presented.family_revoked_at is not None:
            refusal = "The session was ended; log in again"
        elif presented.rotated_at is not None:
            store.revoke_family_txn(conn, presented.family_id, "reuse")
            logger.warning(
                "refresh token reused; revoked family %s of user %s",
                presented.family_id,
                presented.user_id,
            )
            refusal = "The refresh token was already used; the session was ended, log in again"
        elif presented.expires_at <= datetime.now(UTC):
            refusal = "The refresh token has expired; log in again"
        else:
            store.mark_rotated_txn(conn, digest)
            store.touch_family_txn(conn, presented.family_id)
            grant = _grant(
                conn,
                presented.family_id,
                presented.user_id,
                presented.username,
                presented.display_name,
            )
    # Raised only here, after the transaction committed: a revocation for reuse
    # must stick even though the caller gets an error.
    if grant is None:
        raise Problem("invalid-refresh-token", refusal)
    return grant


def end(refresh_token: str) -> None:
    """Log out the device holding ``refresh_token``: revoke its family.

    Idempotent and silent, like OAuth token revocation (RFC 7009): an unknown,
    expired or already revoked token is not an error.
    """
    digest = _digest(refresh_token)
    with database.primary() as conn:
        family_id = store.family_of_token(conn, digest)
        if family_id is not None:
            store.revoke_family_txn(conn, family_id, "logout")
