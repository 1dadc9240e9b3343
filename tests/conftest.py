"""Real servers for the tests: PostgreSQL, Redis and S3 started once per session.

The servers are the same embedded ones ``make dev`` runs (whatschat.embedded),
on free ports in a temporary folder. Set DATABASE_URL / REDIS_URL /
S3_ENDPOINT_URL to test against external servers instead (they must be
disposable: tests truncate tables).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from whatschat import embedded, tokens
from whatschat.config import get_settings

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"

# Tables emptied by the `clean_db` fixture, children first.
TABLES = (
    "outbox",
    "messages",
    "attachments",
    "members",
    "conversations",
    "refresh_tokens",
    "refresh_families",
    "users",
)


@dataclass
class Stack:
    """The session's servers and the settings pointing at them."""

    tmp: Path
    database_url: str
    redis_url: str
    s3_url: str
    postgres: embedded.EmbeddedPostgres | None
    redis: embedded.EmbeddedRedis | None
    s3: embedded.EmbeddedS3 | None
    env: dict[str, str]


def _set_env(values: dict[str, str]) -> None:
    os.environ.update(values)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from whatschat.storage import migrations, objects

    tmp = tmp_path_factory.mktemp("stack")
    pg = rd = s3 = None
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        pg = embedded.EmbeddedPostgres(tmp / "postgres")
        pg.start()
        database_url = pg.url
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url:
        rd = embedded.EmbeddedRedis(tmp / "redis")
        rd.start()
        redis_url = rd.url
    s3_url = os.environ.get("S3_ENDPOINT_URL", "")
    if not s3_url:
        s3 = embedded.EmbeddedS3()
        s3.start()
        s3_url = s3.url
    pair = tokens.generate_key_pair("test-key")
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "S3_ENDPOINT_URL": s3_url,
        "S3_ACCESS_KEY_ID": os.environ.get("S3_ACCESS_KEY_ID", "local"),
        "S3_SECRET_ACCESS_KEY": os.environ.get("S3_SECRET_ACCESS_KEY", "local-secret"),
        "S3_BUCKET": "whatschat-test",
        **pair.settings(),
        "DATABASE_CONNECT_TIMEOUT_SECONDS": "2",
    }
    _set_env(env)
    migrations.apply(database_url)
    objects.ensure_bucket()
    yield Stack(tmp, database_url, redis_url, s3_url, pg, rd, s3, env)
    from whatschat.storage import database

    database.close_pools()
    for server in (s3, rd, pg):
        if server is not None:
            server.stop()


@pytest.fixture
def db(stack: Stack) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the primary, for arranging and checking state."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def clean_db(db: psycopg.Connection[Any], stack: Stack) -> psycopg.Connection[Any]:
    """The database with every table emptied, and Redis flushed."""
    import redis

    db.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    redis.Redis.from_url(stack.redis_url).flushdb()
    return db


@dataclass
class AppUser:
    id: int
    username: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(db: psycopg.Connection[Any]) -> Callable[..., AppUser]:
    """Insert a user directly and issue an access token for them.

    For tests that need accounts but are not about accounts (the accounts
    functions are tested through their own endpoints).
    """

    def make(username: str | None = None, display_name: str | None = None) -> AppUser:
        name = username or f"u{uuid.uuid4().hex[:10]}"
        row = db.execute(
            "INSERT INTO users (username, display_name, password_hash) VALUES (%s, %s, %s)"
            " RETURNING id",
            (name, display_name or name.title(), "not-a-real-hash"),
        ).fetchone()
        assert row is not None
        token, _ = tokens.issue_access_token(row[0], name)
        return AppUser(row[0], name, token)

    return make


@pytest.fixture
def function_client(stack: Stack) -> Callable[[str], Any]:
    """A Flask test client of one function target, built by functions-framework's
    own loading path (create_app), as its container builds it."""
    import functions_framework

    from functions.routes import ROUTES

    signatures = {route.target: route.signature for route in ROUTES}

    def make(target: str) -> Any:
        app = functions_framework.create_app(
            target=target,
            source=str(FUNCTIONS_DIR / f"{target}.py"),
            signature_type=signatures.get(target, "http"),
        )
        return app.test_client()

    return make


@pytest.fixture
def own_redis(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[embedded.EmbeddedRedis]:
    """A Redis of this test's own, which the test may stop and start; the
    settings point at it (with a short timeout) until the test ends."""
    from whatschat.storage import redis_client

    server = embedded.EmbeddedRedis(tmp_path / "redis")
    server.start()
    monkeypatch.setenv("REDIS_URL", server.url)
    monkeypatch.setenv("REDIS_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    try:
        yield server
    finally:
        server.kill()
        monkeypatch.undo()
        get_settings.cache_clear()
        redis_client.client()  # reconnect the shared client to the session's Redis


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Change settings for one test: ``settings(MAX_PAGE_SIZE="4")``. The
    environment and the cached settings are restored after it."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
