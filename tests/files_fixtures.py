"""Fixtures of the files tests; test modules load them with
``pytest_plugins = ["tests.files_fixtures"]``. Helpers are in tests/files_helpers.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import AppUser, Stack
from tests.files_helpers import Conversation, add_member
from whatschat.config import get_settings
from whatschat.storage import objects


@pytest.fixture
def conversation(
    db: psycopg.Connection[Any], make_user: Callable[..., AppUser]
) -> Callable[..., Conversation]:
    """``conversation(n)``: a group with ``n`` new users as current members."""

    def make(n: int = 2) -> Conversation:
        users = [make_user() for _ in range(n)]
        row = db.execute(
            "INSERT INTO conversations (kind, title, created_by) VALUES ('group', 'files', %s)"
            " RETURNING id",
            (users[0].id,),
        ).fetchone()
        assert row is not None
        for user in users:
            add_member(db, row[0], user)
        return Conversation(row[0], users)

    return make


@pytest.fixture
def fresh_bucket(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty, fully set-up bucket for one test (listing tests need a clean one)."""
    name = f"wc-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("S3_BUCKET", name)
    get_settings.cache_clear()
    objects.ensure_bucket()
    yield name
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def file_settings(settings: Callable[..., None]) -> Callable[..., None]:
    """conftest's ``settings``: ``file_settings(ORPHAN_GRACE_SECONDS="0")``."""
    return settings
