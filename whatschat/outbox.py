"""Events published only after the change they describe commits (the outbox).

Domain operations write inside :func:`transaction` and :meth:`Transaction.emit`
their events. The events are inserted into the ``outbox`` table in the same
PostgreSQL transaction; after the commit the function PUBLISHes them to Redis
itself and marks their rows published (:func:`publish`). Whatever it could not
publish — Redis down, the process killed between commit and publish — the
sweeper (:func:`sweep`) publishes once the row is older than
``OUTBOX_SWEEP_MIN_AGE_SECONDS``.

Sweepers claim rows (``FOR UPDATE SKIP LOCKED``) in a transaction that commits
only after the PUBLISH succeeded, so several sweepers never publish a row
twice. The function does not claim its own fresh rows (a claim is a
transaction: two round trips more per request); the sweeper's minimum age
keeps it away from them. A duplicate (same event id and seq, which clients
drop) happens only when a publisher dies after PUBLISH and before its mark or
commit, or when a function stalls longer than the minimum age between its
commit and its PUBLISH. See docs/messaging.md (outbox and sweeper).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from whatschat.config import get_settings
from whatschat.events import Event
from whatschat.storage import database, redis_client
from whatschat.storage import outbox as outbox_rows
from whatschat.storage.database import Connection

logger = logging.getLogger(__name__)

# An outbox row as its publisher knows it: (id, channel, encoded envelope).
Row = tuple[int, str, bytes]

# Rows claimed per sweeper transaction, and transactions per sweep: a sweep
# publishes at most SWEEP_BATCH * SWEEP_MAX_BATCHES rows and ends.
SWEEP_BATCH = 500
SWEEP_MAX_BATCHES = 20
# Published rows deleted per sweep (bounded work per run).
DELETE_BATCH = 5000


@dataclass
class Transaction:
    """An open primary transaction and the events to publish once it commits."""

    conn: Connection  # inside the transaction
    events: list[Event] = field(default_factory=list)  # in emit order
    # outbox rows the caller wrote itself: (id, channel, encoded envelope)
    inserted: list[Row] = field(default_factory=list)

    def emit(self, event: Event) -> None:
        """Publish ``event`` after commit (nothing is published on rollback)."""
        self.events.append(event)

    def emitted(self, outbox_id: int, channel: str, payload: bytes) -> None:
        """Publish after commit an outbox row the caller inserted itself (a send
        writes its message and its event in one statement: one round trip less)."""
        self.inserted.append((outbox_id, channel, payload))


@contextmanager
def transaction() -> Iterator[Transaction]:
    """One primary transaction; its events go to the outbox, then to Redis after commit.

    An exception inside rolls everything back, events included.
    """
    with database.primary() as conn:
        txn = Transaction(conn)
        with conn.transaction():
            yield txn
            encoded = [(e.channel, e.encode()) for e in txn.events]
            ids = outbox_rows.insert_txn(conn, encoded)
            rows = txn.inserted + [(id_, *row) for id_, row in zip(ids, encoded, strict=True)]
        if rows:
            publish(conn, rows)


def publish(conn: Connection, rows: Sequence[Row]) -> int:
    """PUBLISH committed outbox rows, in order, then mark them published.

    Never raises for Redis or the database: what was not marked stays for the
    sweeper, and the caller's change is committed either way. Returns how
    many rows this call published.
    """
    try:
        _publish_rows([(channel, payload) for _, channel, payload in rows])
    except redis_client.RedisUnavailable as exc:
        logger.warning("outbox: publish failed, the sweeper will retry: %s", exc)
        return 0
    try:
        # One autocommit statement, not BEGIN + UPDATE + COMMIT.
        with database.autocommit(conn):
            outbox_rows.mark_published(conn, [id_ for id_, _, _ in rows])
    except Exception:
        # Published but not marked: the sweeper publishes these rows again
        # (a duplicate that clients drop). Failing the request now would make
        # the client retry something that succeeded.
        logger.exception("outbox: marking published rows failed; the sweeper will repeat them")
    return len(rows)


def _publish_rows(rows: Sequence[tuple[str, bytes]]) -> None:
    """PUBLISH each (channel, payload) in order (one round trip); raises RedisUnavailable."""
    if not rows:
        return
    if len(rows) == 1:
        redis_client.publish(*rows[0])
        return
    try:
        pipe = redis_client.client().pipeline(transaction=False)
        for channel, payload in rows:
            pipe.publish(channel, payload)
        pipe.execute()
    except redis_client.RedisError as exc:
        raise redis_client.RedisUnavailable(str(exc)) from exc


@dataclass(frozen=True)
class SweepReport:
    """What one sweep did."""

    published: int  # rows published by this sweep
    deleted: int  # published rows removed after the retention
    redis_down: bool  # stopped early because Redis did not answer


def sweep(min_age_seconds: float | None = None) -> SweepReport:
    """Publish outbox rows older than ``min_age_seconds`` that nobody published,
    oldest first, then delete published rows older than the retention.

    Several sweepers may run at once: each claims different rows.
    """
    settings = get_settings()
    min_age = settings.outbox_sweep_min_age_seconds if min_age_seconds is None else min_age_seconds
    published = 0
    redis_down = False
    for _ in range(SWEEP_MAX_BATCHES):
        try:
            with database.primary() as conn, conn.transaction():
                rows = outbox_rows.claim_due_txn(conn, min_age, SWEEP_BATCH)
                _publish_rows([(row["channel"], bytes(row["payload"])) for row in rows])
        except redis_client.RedisUnavailable as exc:
            logger.warning("outbox sweep: Redis unavailable, will retry: %s", exc)
            redis_down = True
            break
        published += len(rows)
        if len(rows) < SWEEP_BATCH:
            break
    with database.primary() as conn:
        deleted = outbox_rows.delete_published_txn(
            conn, settings.outbox_retention_seconds, DELETE_BATCH
        )
    if published:
        logger.info("outbox sweep: published %d missed event(s)", published)
    return SweepReport(published, deleted, redis_down)


def pending() -> int:
    """How many events wait to be published."""
    with database.primary() as conn:
        return outbox_rows.unpublished_count_txn(conn)
