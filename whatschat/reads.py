"""Where a read runs: the replica when one is configured, else the primary.

A read goes to the primary instead when the replica

- is not configured (``DATABASE_REPLICA_URL`` empty),
- is unreachable (``database.replica`` then skips it for
  ``REPLICA_RETRY_SECONDS``, so a dead replica costs one connect timeout,
  not one per request),
- has not replayed what the client already knows: the read calls
  :meth:`Reader.require` with "the replica's last_seq covers the seq the
  client sent" (read-your-writes), or the replica does not know the caller's
  membership yet (a 404 there is retried on the primary).

See docs/messaging.md (read replica routing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from whatschat.problems import Problem
from whatschat.storage import database
from whatschat.storage.database import Connection, DatabaseUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ReplicaBehind(Exception):
    """The replica has not replayed what the client already knows; use the primary."""


@dataclass(frozen=True)
class Reader:
    """A connection for one read and where it points."""

    conn: Connection  # inside a transaction on the replica or the primary
    on_replica: bool  # True when ``conn`` is the replica

    def require(self, fresh: bool, what: str) -> None:
        """On the replica, give up (the read reruns on the primary) unless ``fresh``."""
        if self.on_replica and not fresh:
            raise ReplicaBehind(what)


def read(work: Callable[[Reader], T]) -> T:
    """Run ``work`` on the replica if it can answer, else on the primary."""
    if database.replica_configured():
        try:
            with database.replica() as conn:
                return work(Reader(conn, on_replica=True))
        except ReplicaBehind as exc:
            logger.debug("replica behind (%s); reading the primary", exc)
        except database.ReplicaSkipped:
            pass
        except DatabaseUnavailable as exc:
            logger.warning("replica unavailable, reading the primary: %s", exc)
        except Problem as problem:
            # The replica may not have replayed a membership the caller just got.
            if problem.status != 404:
                raise
    with database.primary() as conn:
        return work(Reader(conn, on_replica=False))
