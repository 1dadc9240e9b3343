"""Accounts: register, log in, own profile, look up another user.

The functions in functions/ (register, login, refresh, me, users) parse the
request into the models here and call one operation. Passwords are argon2id
(:mod:`whatschat.passwords`), sessions are refresh families
(:mod:`whatschat.sessions`), failed logins are throttled
(:mod:`whatschat.auth_throttle`). See docs/auth.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from whatschat import auth_throttle, passwords, reads, sessions
from whatschat.problems import Problem, not_found
from whatschat.storage import accounts as store
from whatschat.storage import database

# The same rule as the users table's CHECK constraint.
USERNAME_PATTERN = r"^[A-Za-z0-9_.]{3,32}$"
_USERNAME = re.compile(USERNAME_PATTERN)

Username = Annotated[
    str,
    Field(
        pattern=USERNAME_PATTERN,
        description="3 to 32 letters, digits, '_' or '.'; unique ignoring letter case",
        examples=["alice"],
    ),
]
# No control characters: they are invisible, and PostgreSQL text cannot hold NUL.
DisplayName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    Field(pattern=r"^[^\x00-\x1f\x7f]*$", examples=["Alice Liddell"]),
]
Password = Annotated[
    str,
    Field(
        min_length=passwords.MIN_LENGTH,
        max_length=passwords.MAX_LENGTH,
        repr=False,
        json_schema_extra={"format": "password", "writeOnly": True},
    ),
]
DeviceName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=64),
    Field(
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Shown in the user's list of sessions, e.g. 'Pixel 8'",
    ),
]


class Registration(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid")

    username: Username
    display_name: DisplayName
    password: Password
    device_name: DeviceName = ""


class Credentials(BaseModel):
    """A login."""

    model_config = ConfigDict(extra="forbid")

    username: Username
    password: Password
    device_name: DeviceName = ""


class ProfileUpdate(BaseModel):
    """Changes to one's own profile; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> ProfileUpdate:
        if self.display_name is None:
            raise ValueError("give at least one field to change")
        return self


class PublicProfile(BaseModel):
    """What any logged-in user may see of another."""

    id: int
    username: str
    display_name: str


class OwnProfile(PublicProfile):
    """What a user sees of themselves."""

    created_at: datetime
    updated_at: datetime


class AuthSession(BaseModel):
    """Tokens for a device, and the user they belong to (login, refresh, register)."""

    # Every field is always sent, token_type too: the schema says so.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    access_token: str = Field(description="JWT (EdDSA); send as 'Authorization: Bearer ...'")
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str = Field(description="Opaque; exchange at /v1/auth/refresh, once")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires")
    user: PublicProfile

    @classmethod
    def of(cls, grant: sessions.Grant) -> AuthSession:
        return cls(
            access_token=grant.access_token,
            expires_in=grant.expires_in,
            refresh_token=grant.refresh_token,
            refresh_expires_in=grant.refresh_expires_in,
            user=PublicProfile(
                id=grant.user_id, username=grant.username, display_name=grant.display_name
            ),
        )


def register(registration: Registration, client_address: str) -> AuthSession:
    """Create an account and log its first device in, in one transaction.

    Raises 409 ``username-taken`` when the name exists in any letter case, and
    429 when the address registered too many accounts this hour.
    """
    auth_throttle.check_registration(client_address)
    # Hash before the transaction: it is the slow part and needs no lock.
    password_hash = passwords.hash_password(registration.password)
    with database.primary() as conn:
        account = store.insert_account_txn(
            conn, registration.username, registration.display_name, password_hash
        )
        if account is None:
            raise Problem("username-taken", f"The username {registration.username!r} is taken")
        grant = sessions.start_txn(
            conn,
            user_id=account.id,
            username=account.username,
            display_name=account.display_name,
            device_name=registration.device_name,
        )
    return AuthSession.of(grant)


def login(credentials: Credentials, client_address: str) -> AuthSession:
    """Check username and password and start a session for the device.

    An unknown username and a wrong password give the same 401 problem after
    the same argon2 work; failures are throttled per username and address.
    """
    guard = auth_throttle.LoginGuard(credentials.username, client_address)
    guard.check()
    with database.primary() as conn:
        account = store.account_by_username(conn, credentials.username)
    # Verify even when there is no such user (against a dummy hash): both
    # failures must cost the same argon2 work.
    matches = passwords.verify(
        account.password_hash if account is not None else None, credentials.password
    )
    if account is None or not matches:
        guard.failed()
        raise Problem("invalid-credentials", "Wrong username or password")
    guard.succeeded()
    # Made outside the transaction, like at registration: hashing is the slow part.
    upgraded_hash = (
        passwords.hash_password(credentials.password)
        if passwords.needs_rehash(account.password_hash)
        else None
    )
    with database.primary() as conn:
        if upgraded_hash is not None:
            store.update_password_hash_txn(conn, account.id, upgraded_hash)
        grant = sessions.start_txn(
            conn,
            user_id=account.id,
            username=account.username,
            display_name=account.display_name,
            device_name=credentials.device_name,
        )
    return AuthSession.of(grant)


def refresh(refresh_token: str) -> AuthSession:
    """Exchange a refresh token for new tokens (see :func:`whatschat.sessions.rotate`)."""
    return AuthSession.of(sessions.rotate(refresh_token))


def own_profile(user_id: int) -> OwnProfile:
    """The caller's profile; 404 if the account no longer exists."""
    with database.primary() as conn:
        account = store.account_by_id(conn, user_id)
    if account is None:
        raise not_found("Your account no longer exists")
    return _own(account)


def update_profile(user_id: int, update: ProfileUpdate) -> OwnProfile:
    """Apply the given changes to the caller's profile and return it."""
    assert update.display_name is not None  # the model requires a change
    with database.primary() as conn:
        account = store.update_display_name_txn(conn, user_id, update.display_name)
    if account is None:
        raise not_found("Your account no longer exists")
    return _own(account)


def lookup(username: str) -> PublicProfile:
    """Find a user by username, ignoring letter case (to start a chat); 404 if none."""
    if not _USERNAME.fullmatch(username):
        raise not_found(f"No user is called {username!r}")

    def find(reader: reads.Reader) -> store.Account:
        # A 404 on the replica is retried on the primary by reads.read: the
        # replica may not have replayed a new account yet.
        found = store.account_by_username(reader.conn, username)
        if found is None:
            raise not_found(f"No user is called {username!r}")
        return found

    account = reads.read(find)
    return PublicProfile(
        id=account.id, username=account.username, display_name=account.display_name
    )


def _own(account: store.Account) -> OwnProfile:
    return OwnProfile(
        id=account.id,
        username=account.username,
        display_name=account.display_name,
        created_at=account.created_at,
        updated_at=account.updated_at,
    )
