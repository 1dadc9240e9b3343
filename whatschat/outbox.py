"""Events published only after the change they describe commits (the outbox).

Domain operations write inside :func:`transaction` and :meth:`Transaction.emit`
their events. The events are inserted into the ``outbox`` table in the same
PostgreSQL transaction; after the commit the function publishes them to Redis
itself (:func:`publish`). Whatever it could not publish — Redis down, the
process killed between commit and publish — :func:`sweep` publishes later.

Exactly one publisher handles a row at a time: publishing claims the row
(``published_at`` set under ``FOR UPDATE SKIP LOCKED``) in a transaction that
commits only after the PUBLISH succeeded. A crash after PUBLISH and before
that commit publishes the row again later: a duplicate with the same event id
and seq, which clients drop. See docs/messaging.md (outbox and sweeper).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from whatschat.config import get_settings
from whatschat.events import Event
from whatschat.storage import database, redis_client
from whatschat.storage import outbox as outbox_rows
from whatschat.storage.database import Connection

logger = logging.getLogger(__name__)

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
    inserted: list[int] = field(default_factory=list)  # outbox rows the caller wrote itself

    def emit(self, event: Event) -> None:
        """Publish ``event`` after commit (nothing is published on rollback)."""
        self.events.append(event)

    def emitted(self, outbox_id: int) -> None:
        """Publish after commit an outbox row the caller inserted itself (a send
        writes its message and its event in one statement: one round trip less)."""
        self.inserted.append(outbox_id)


@contextmanager
def transaction() -> Iterator[Transaction]:
    """One primary transaction; its events go to the outbox, then to Redis after commit.

    An exception inside rolls everything back, events included.
    """
    with database.primary() as conn:
        txn = Transaction(conn)
        with conn.transaction():
            yield txn
            ids = txn.inserted + outbox_rows.insert_txn(
                conn, [(e.channel, e.encode()) for e in txn.events]
            )
        if ids:
            publish(conn, ids)


def publish(conn: Connection, ids: Sequence[int]) -> int:
    """Publish the committed outbox rows ``ids`` unless another publisher has them.

    Never raises for Redis or the database: the rows then stay for the
    sweeper, and the caller's change is committed either way. Returns how
    many rows this call published.
    """
    try:
        with conn.transaction():
            rows = outbox_rows.claim_txn(conn, ids)
            _publish_rows(rows)
            return len(rows)
    except redis_client.RedisUnavailable as exc:
        logger.warning("outbox: publish failed, the sweeper will retry: %s", exc)
    except Exception:
        # The change is committed; failing the request now would make the
        # client retry something that succeeded. The sweeper publishes it.
        logger.exception("outbox: publish failed, the sweeper will retry")
    return 0


def _publish_rows(rows: Sequence[dict[str, Any]]) -> None:
    """PUBLISH each row in order (one round trip); raises RedisUnavailable."""
    if not rows:
        return
    if len(rows) == 1:
        redis_client.publish(rows[0]["channel"], bytes(rows[0]["payload"]))
        return
    try:
        pipe = redis_client.client().pipeline(transaction=False)
        for row in rows:
            pipe.publish(row["channel"], bytes(row["payload"]))
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
                _publish_rows(rows)
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
