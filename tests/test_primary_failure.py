"""Primary down: writes fail fast with 503 + Retry-After, nothing half-written,
and the functions recover by themselves when PostgreSQL returns."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.conftest import Stack
from whatschat import embedded, tokens
from whatschat.config import get_settings
from whatschat.storage import database, migrations


@pytest.fixture
def own_primary(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[embedded.EmbeddedPostgres]:
    server = embedded.EmbeddedPostgres(tmp_path / "primary")
    server.start()
    migrations.apply(server.url)
    # Its user ids start at 1 again: forget rate-limit counts of earlier tests.
    redis.Redis.from_url(stack.redis_url).flushdb()
    database.close_pools()
    monkeypatch.setenv("DATABASE_URL", server.url)
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    yield server
    database.close_pools()
    monkeypatch.undo()
    get_settings.cache_clear()
    server.stop()


def _conversation(url: str) -> tuple[int, int, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO users (username, display_name, password_hash)"
            " VALUES ('pat', 'Pat', 'x') RETURNING id"
        ).fetchone()
        conv = conn.execute(
            "INSERT INTO conversations (kind, direct_key) VALUES ('direct', '0:1') RETURNING id"
        ).fetchone()
        assert user is not None and conv is not None
        conn.execute(
            "INSERT INTO members (conversation_id, user_id) VALUES (%s, %s)", (conv[0], user[0])
        )
    token, _ = tokens.issue_access_token(user[0], "pat")
    return user[0], conv[0], token


def _send(client: Any, conversation_id: int, token: str) -> Any:
    return client.post(
        "/v1/messages",
        json={"conversation_id": conversation_id, "client_msg_id": uuid.uuid4().hex, "text": "hi"},
        headers={"Authorization": f"Bearer {token}"},
    )


def test_sends_get_503_while_the_primary_is_down_and_recover_after(
    own_primary: embedded.EmbeddedPostgres, function_client: Callable[[str], Any]
) -> None:
    _, conversation_id, token = _conversation(own_primary.url)
    send = function_client("send")
    assert _send(send, conversation_id, token).status_code == 201

    own_primary.stop()
    started = time.monotonic()
    down = _send(send, conversation_id, token)
    assert time.monotonic() - started < 10, "a send hung on a dead primary"
    assert down.status_code == 503
    assert down.headers["Content-Type"] == "application/problem+json"
    assert down.get_json()["code"] == "service-unavailable"
    assert int(down.headers["Retry-After"]) >= 1

    own_primary.start()
    # Connections broken by the restart are dropped; within a few requests
    # (at most the pool size) sends succeed again.
    statuses = [_send(send, conversation_id, token).status_code for _ in range(6)]
    assert statuses[-1] == 201, statuses
    assert set(statuses) <= {201, 503}

    with psycopg.connect(own_primary.url) as conn:
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM messages WHERE conversation_id = %s ORDER BY seq",
                (conversation_id,),
            )
        ]
        last_seq = conn.execute(
            "SELECT last_seq FROM conversations WHERE id = %s", (conversation_id,)
        ).fetchone()
    # Nothing half-written: every stored message has a seq, gap-free, and the
    # conversation's counter agrees; the failed sends left no trace.
    assert seqs == list(range(1, len(seqs) + 1))
    assert last_seq == (len(seqs),)
    assert len(seqs) == 1 + statuses.count(201)
