"""Reads go to a real streaming replica, and to the primary when it is behind or down.

The replica is built from the session's primary with pg_basebackup. Pausing
its WAL replay makes it stale on purpose: a read that returns the stale data
was served by the replica; a read that needs newer data must come from the
primary (read-your-writes). Then the replica is killed and reads go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import AppUser, Stack
from tests.messaging_helpers import Chat
from whatschat import embedded
from whatschat.config import get_settings
from whatschat.storage import database

pytest_plugins = ["tests.messaging_fixtures"]


@pytest.fixture
def replica(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[embedded.EmbeddedPostgres]:
    if stack.postgres is None:
        pytest.skip("needs the embedded primary to build a replica from")
    server = stack.postgres.make_replica(tmp_path / "replica")
    server.start()
    monkeypatch.setenv("DATABASE_REPLICA_URL", server.url)
    get_settings.cache_clear()
    yield server
    server.kill()
    monkeypatch.undo()
    get_settings.cache_clear()
    database.close_pools()


def _on_replica(replica: embedded.EmbeddedPostgres, sql: str, *params: Any) -> Any:
    with psycopg.connect(replica.url, autocommit=True) as conn:
        row = conn.execute(sql, params or None).fetchone()
        return None if row is None else row[0]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _texts(page: dict[str, Any]) -> list[str | None]:
    return [m["text"] for m in page["messages"]]


@pytest.mark.slow
def test_reads_use_the_replica_unless_it_is_behind_or_down(
    chat: Chat, make_user: Callable[..., AppUser], replica: embedded.EmbeddedPostgres
) -> None:
    assert _on_replica(replica, "SELECT pg_is_in_recovery()") is True
    alice, bob, carol = make_user(), make_user(), make_user()
    cid = chat.direct(alice, bob)
    for n in range(3):
        chat.send(alice, cid, f"m{n}")
    _wait(
        lambda: _on_replica(replica, "SELECT last_seq FROM conversations WHERE id = %s", cid) == 3,
        "the replica to replay the first messages",
    )
    _on_replica(replica, "SELECT pg_wal_replay_pause()")
    _wait(
        lambda: _on_replica(replica, "SELECT pg_get_wal_replay_pause_state()") == "paused",
        "replay to pause",
    )
    # Written on the primary while the replica stands still.
    chat.ok(alice, "PATCH", f"/v1/messages/{cid}/1", {"text": "m0 edited"})
    chat.send(alice, cid, "m3")
    chat.send(alice, cid, "m4")

    # The client knows nothing newer than the replica has: the replica answers,
    # and its stale text proves it.
    assert _texts(chat.history(bob, cid, after_seq=0)) == ["m0", "m1", "m2"]
    listed = chat.ok(bob, "GET", "/v1/conversations")["conversations"]
    assert listed[0]["last_seq"] == 3
    # The client already has seq 4: the replica has not replayed it, the primary answers.
    assert _texts(chat.history(bob, cid, after_seq=4)) == ["m4"]
    assert _texts(chat.history(bob, cid, before_seq=5)) == ["m3", "m2", "m1", "m0 edited"]
    synced = chat.ok(bob, "POST", "/v1/sync", {"positions": {str(cid): 4}})
    assert [m["text"] for m in synced["conversations"][0]["messages"]] == ["m4"]
    # It knows edit 1 happened: the edits come from the primary.
    synced = chat.ok(
        bob, "POST", "/v1/sync", {"positions": {str(cid): 3}, "edit_positions": {str(cid): 1}}
    )
    assert synced["conversations"][0]["conversation"]["last_edit_seq"] == 1
    # A conversation created after the pause is unknown to the replica: the
    # caller still gets it (a 404 on the replica is retried on the primary).
    gid = chat.group(carol, [bob])
    assert chat.ok(bob, "GET", f"/v1/conversations/{gid}")["title"] == "Team"
    assert [m["seq"] for m in chat.history(bob, gid)["messages"]] == [1]

    # The replica dies: reads go on, from the primary.
    replica.kill()
    assert _texts(chat.history(bob, cid, after_seq=0)) == ["m0 edited", "m1", "m2", "m3", "m4"]
    started = time.monotonic()
    listed = chat.ok(bob, "GET", "/v1/conversations")["conversations"]
    assert {c["id"]: c["last_seq"] for c in listed} == {cid: 5, gid: 1}
    # The dead replica is not retried on every read (REPLICA_RETRY_SECONDS).
    assert time.monotonic() - started < 1.0
