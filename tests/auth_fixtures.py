"""Fixtures and helpers shared by the accounts, sessions and throttling tests.

Tests use tiny argon2 parameters (the production ones cost ~0.1 s per hash on
a 2-core machine, and these tests hash a few hundred times); the parameters
themselves are exercised by bench/auth_bench.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from whatschat.auth_throttle import local_counter
from whatschat.config import get_settings

FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024", "ARGON2_PARALLELISM": "1"}

PASSWORD = "correct horse battery"


@pytest.fixture
def auth_env(clean_db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Empty database and Redis, fast argon2, no leftover local throttle counts."""
    for name, value in FAST_ARGON2.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    local_counter.clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()
    local_counter.clear()


@pytest.fixture
def auth_settings(settings: Callable[..., None]) -> Callable[..., None]:
    """conftest's ``settings``: ``auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="3")``."""
    return settings


def count_rows(db: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows in each accounts table: proves a refused request wrote nothing."""
    counts = {}
    for table in ("users", "refresh_families", "refresh_tokens"):
        row = db.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        assert row is not None
        counts[table] = int(row[0])
    return counts


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is an RFC 9457 problem of this status and code; return its body."""
    assert response.status_code == status, response.data
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["code"] == code and body["status"] == status and body["type"] == f"/problems/{code}"
    return body


def register(
    client: Any,
    username: str,
    password: str = PASSWORD,
    display_name: str | None = None,
    **extra: str,
) -> dict[str, Any]:
    """Register through the register function; return the 201 body."""
    response = client.post(
        "/v1/auth/register",
        json={
            "username": username,
            "display_name": display_name or username.title(),
            "password": password,
            **extra,
        },
    )
    assert response.status_code == 201, response.data
    body: dict[str, Any] = response.get_json()
    return body


def login(client: Any, username: str, password: str = PASSWORD, address: str | None = None) -> Any:
    """POST a login; ``address`` is sent as X-Forwarded-For (the ingress sets it)."""
    headers = {"X-Forwarded-For": address} if address else {}
    return client.post(
        "/v1/auth/login", json={"username": username, "password": password}, headers=headers
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
