"""The outbox: sends survive a Redis outage; the sweeper publishes every missed
event exactly once, even with several sweepers at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import AppUser, Stack
from tests.messaging_helpers import Chat, EventSink
from whatschat import embedded, events, outbox
from whatschat.config import get_settings
from whatschat.storage import outbox as outbox_rows

pytest_plugins = ["tests.messaging_fixtures"]

CLOUD_EVENT_HEADERS = {
    "ce-specversion": "1.0",
    "ce-type": "dev.knative.sources.ping",
    "ce-source": "tests/outbox",
}


def _fire_sweeper(function_client: Callable[[str], Any]) -> None:
    response = function_client("outbox_sweeper").post(
        "/", json={}, headers={**CLOUD_EVENT_HEADERS, "ce-id": uuid.uuid4().hex}
    )
    assert response.status_code == 200, response.data


@pytest.fixture
def own_redis(
    own_redis: embedded.EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> embedded.EmbeddedRedis:
    """conftest's own Redis, with the sweeper taking rows of any age."""
    monkeypatch.setenv("OUTBOX_SWEEP_MIN_AGE_SECONDS", "0")
    get_settings.cache_clear()
    return own_redis


@pytest.mark.slow
def test_sends_succeed_while_redis_is_down_and_the_sweeper_publishes_each_once(
    chat: Chat,
    make_user: Callable[..., AppUser],
    own_redis: embedded.EmbeddedRedis,
    function_client: Callable[[str], Any],
    db: psycopg.Connection[Any],
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)
    assert outbox.pending() == 0  # published while Redis was up

    own_redis.stop()
    started = time.monotonic()
    sent = [
        chat.call(
            alice,
            "POST",
            "/v1/messages",
            {"conversation_id": cid, "client_msg_id": f"m{n}", "text": f"during outage {n}"},
        )
        for n in range(20)
    ]
    elapsed = time.monotonic() - started
    assert [r.status_code for r in sent] == [201] * 20
    assert [r.get_json()["seq"] for r in sent] == list(range(1, 21))
    chat.ok(bob, "POST", "/v1/receipts", {"conversation_id": cid, "seq": 20})
    gid = chat.group(alice, [bob])
    # Every change persisted; its events wait in the outbox.
    assert db.execute(
        "SELECT count(*) FROM messages WHERE conversation_id = %s", (cid,)
    ).fetchone() == (20,)
    waiting = outbox.pending()
    assert waiting == 20 + 1 + 3  # messages, read.updated, group.created + 2 member.added
    # The sweeper finds Redis down, publishes nothing and loses nothing.
    _fire_sweeper(function_client)
    assert outbox.pending() == waiting
    # Sends do not wait on the dead Redis (no timeouts, no retries with backoff).
    assert elapsed < 20 * 0.5

    own_redis.start()
    sink = EventSink(own_redis.url)
    try:
        _fire_sweeper(function_client)
        assert outbox.pending() == 0
        assert sink.wait_for(waiting)
        _fire_sweeper(function_client)  # nothing left: publishes nothing more
        time.sleep(0.3)
        received = sink.events()
        assert len(received) == waiting
        assert len({e.id for e in received}) == waiting
        created = [
            e.seq for e in sink.on(events.conversation_channel(cid)) if e.type == "message.created"
        ]
        assert created == list(range(1, 21))  # in order, each once
        assert [e.type for e in sink.on(events.conversation_channel(gid))] == ["group.created"]
        assert len(sink.events("read.updated")) == 1
    finally:
        sink.close()
    # New sends publish directly again.
    chat.send(alice, cid, "back to normal")
    assert outbox.pending() == 0


def _insert_unpublished(db: psycopg.Connection[Any], count: int) -> list[str]:
    """``count`` events waiting in the outbox, as a crashed function would leave them."""
    built = [
        events.Event("read.updated", {"n": n}, conversation_id=1 + n % 7) for n in range(count)
    ]
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO outbox (channel, payload) VALUES (%s, %s)",
            [(e.channel, e.encode()) for e in built],
        )
    return [e.id for e in built]


@pytest.mark.slow
def test_concurrent_sweepers_publish_every_row_exactly_once(
    events_seen: EventSink, db: psycopg.Connection[Any]
) -> None:
    ids = _insert_unpublished(db, 1500)
    reports: list[outbox.SweepReport] = []
    barrier = threading.Barrier(4)

    def sweeper() -> None:
        barrier.wait()
        reports.append(outbox.sweep(min_age_seconds=0))

    threads = [threading.Thread(target=sweeper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r.published for r in reports) == 1500
    assert events_seen.wait_for(1500)
    time.sleep(0.3)
    seen = Counter(e.id for e in events_seen.events())
    assert set(seen) == set(ids) and max(seen.values()) == 1
    assert outbox.pending() == 0


def test_rows_claimed_by_a_sweeper_are_skipped_by_the_others(
    events_seen: EventSink, db: psycopg.Connection[Any], stack: Stack
) -> None:
    ids = _insert_unpublished(db, 10)
    # One sweeper between its claim and its commit holds three rows...
    with psycopg.connect(stack.database_url, row_factory=dict_row) as holder:
        claimed = outbox_rows.claim_due_txn(holder, 0, 3)
        assert len(claimed) == 3
        assert outbox.sweep(min_age_seconds=0).published == 7
        # ...and then dies: its transaction rolls back instead of committing.
        holder.rollback()
    assert outbox.pending() == 3
    assert outbox.sweep(min_age_seconds=0).published == 3
    assert events_seen.wait_for(10)
    time.sleep(0.2)
    assert sorted(e.id for e in events_seen.events()) == sorted(ids)


def test_a_function_publishes_and_marks_its_own_rows(
    events_seen: EventSink, db: psycopg.Connection[Any]
) -> None:
    built = [events.Event("read.updated", {"n": n}, conversation_id=1) for n in range(3)]
    with outbox.transaction() as txn:
        for event in built:
            txn.emit(event)
    assert db.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone() == (0,)
    assert events_seen.wait_for(3)
    assert [e.id for e in events_seen.events()] == [e.id for e in built]  # in emit order
    assert outbox.sweep(min_age_seconds=0).published == 0


def test_rows_published_but_not_marked_are_repeated_by_the_sweeper_never_lost(
    events_seen: EventSink, db: psycopg.Connection[Any]
) -> None:
    # PostgreSQL refuses the function's mark (a trigger), after its PUBLISH.
    db.execute(
        """
        CREATE FUNCTION refuse_mark() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'mark refused by the test'; END $$;
        CREATE TRIGGER refuse_mark BEFORE UPDATE ON outbox
        FOR EACH ROW EXECUTE FUNCTION refuse_mark();
        """
    )
    try:
        built = [events.Event("read.updated", {"n": n}, conversation_id=1) for n in range(2)]
        with outbox.transaction() as txn:  # the change commits; no error reaches the caller
            for event in built:
                txn.emit(event)
        assert events_seen.wait_for(2)
        assert outbox.pending() == 2
    finally:
        db.execute("DROP TRIGGER refuse_mark ON outbox; DROP FUNCTION refuse_mark()")
    assert outbox.sweep(min_age_seconds=0).published == 2
    assert events_seen.wait_for(4)
    time.sleep(0.2)
    # Each event twice with the same id (clients drop the repeat), none lost.
    assert sorted(e.id for e in events_seen.events()) == sorted(e.id for e in built * 2)
    assert outbox.pending() == 0


def test_young_rows_wait_and_old_published_rows_are_deleted(
    events_seen: EventSink, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert_unpublished(db, 2)
    # Too young: the function that wrote them may still be publishing.
    assert outbox.sweep(min_age_seconds=60).published == 0
    db.execute("UPDATE outbox SET created_at = now() - interval '2 hours'")
    report = outbox.sweep(min_age_seconds=60)
    assert (report.published, report.deleted) == (2, 0)  # kept for the 1-day retention
    monkeypatch.setenv("OUTBOX_RETENTION_SECONDS", "3600")
    get_settings.cache_clear()
    _insert_unpublished(db, 1)
    db.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
    # The two old published rows go; the young published one stays.
    assert outbox.sweep(min_age_seconds=60).deleted == 2
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    get_settings.cache_clear()
