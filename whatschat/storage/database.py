"""PostgreSQL connection pools: the primary for writes, the replica for reads.

Pools are created on first use so a function that never touches the database
(or a cold start) pays nothing. A pool that cannot hand out a connection within
``DATABASE_CONNECT_TIMEOUT_SECONDS`` raises :class:`DatabaseUnavailable`, which
the HTTP adapter turns into 503 + Retry-After.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from whatschat.config import get_settings
from whatschat.problems import DependencyUnavailable

Connection = psycopg.Connection[dict[str, object]]


class DatabaseUnavailable(DependencyUnavailable):
    """PostgreSQL could not be reached in time; the caller should retry later."""

    dependency = "PostgreSQL"


# A connection used within this many seconds is handed out without a ping: a
# ping per request is a round trip per request. One idle longer (possibly cut
# by a server restart or a proxy) is checked first and replaced if dead.
_CHECK_IDLE_SECONDS = 5.0
_last_returned: weakref.WeakKeyDictionary[Connection, float] = weakref.WeakKeyDictionary()


def _remember_return(conn: Connection) -> None:
    _last_returned[conn] = time.monotonic()


def _check_if_idle(conn: Connection) -> None:
    if time.monotonic() - _last_returned.get(conn, 0.0) > _CHECK_IDLE_SECONDS:
        ConnectionPool.check_connection(conn)


_pools: dict[str, ConnectionPool[Connection]] = {}
_pools_lock = threading.Lock()


def _pool(url: str) -> ConnectionPool[Connection]:
    pool = _pools.get(url)
    if pool is not None:
        return pool  # every request passes here: no lock once it exists
    with _pools_lock:
        pool = _pools.get(url)
        if pool is None:
            settings = get_settings()
            pool = ConnectionPool(
                url,
                min_size=0,
                max_size=settings.database_pool_max_size,
                kwargs={
                    "row_factory": dict_row,
                    "connect_timeout": max(1, int(settings.database_connect_timeout_seconds)),
                },
                timeout=settings.database_connect_timeout_seconds,
                # A connection that broke while idle (server restart) is
                # dropped instead of being handed to a request; a busy one is
                # trusted (a request on a broken one gets 503 and the pool
                # discards it).
                check=_check_if_idle,
                # No reset callback: with one, the pool hands every returned
                # connection to its worker thread (a thread wake-up and GIL
                # hand-off per request). The return time is noted by
                # _connection instead.
                open=True,
                name=url.rsplit("@", 1)[-1],
            )
            _pools[url] = pool
        return pool


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    try:
        with _pool(url).connection() as conn:
            try:
                yield conn
            finally:
                _remember_return(conn)
    except PoolTimeout as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


@contextmanager
def primary() -> Iterator[Connection]:
    """A connection to the primary inside a transaction committed on success."""
    with _connection(get_settings().database_url) as conn:
        yield conn


@contextmanager
def autocommit(conn: Connection) -> Iterator[Connection]:
    """Run each statement on ``conn`` (not in a transaction) as its own
    transaction: one round trip instead of BEGIN, statement, COMMIT."""
    conn.autocommit = True
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.autocommit = False


class ReplicaSkipped(DatabaseUnavailable):
    """The replica failed less than ``REPLICA_RETRY_SECONDS`` ago: not tried now."""

    dependency = "The PostgreSQL replica"


# replica URL -> monotonic time before which it is not tried again
_replica_skip_until: dict[str, float] = {}


def replica_configured() -> bool:
    """Whether reads may go to a replica other than the primary."""
    settings = get_settings()
    return bool(settings.database_replica_url) and (
        settings.database_replica_url != settings.database_url
    )


@contextmanager
def replica() -> Iterator[Connection]:
    """A connection to the read replica; raises DatabaseUnavailable when it is down.

    A replica that failed is skipped (:class:`ReplicaSkipped`, raised at once)
    for ``REPLICA_RETRY_SECONDS``, so while it is dead each read costs no
    connect timeout. Callers fall back to :func:`primary` (see
    docs/messaging.md, read replica routing).
    """
    settings = get_settings()
    if not replica_configured():
        with _connection(settings.database_url) as conn:
            yield conn
        return
    url = settings.database_replica_url
    with _pools_lock:
        skip_until = _replica_skip_until.get(url, 0.0)
    if time.monotonic() < skip_until:
        raise ReplicaSkipped("the replica failed recently; reading the primary")
    try:
        with _connection(url) as conn:
            yield conn
    except DatabaseUnavailable:
        with _pools_lock:
            _replica_skip_until[url] = time.monotonic() + settings.replica_retry_seconds
        raise


def close_pools() -> None:
    """Close every pool (tests and shutdown)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


def ping(url: str, timeout: float) -> None:
    """Open a fresh connection and run ``SELECT 1``; raises on failure (health checks)."""
    with psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
        conn.execute("SELECT 1")
