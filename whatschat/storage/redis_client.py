"""The synchronous Redis client of the functions (events, rate limits, caches).

Created on first use with short timeouts: a function never hangs on a dead
Redis. Callers decide what Redis being down means for them (sends still
succeed, the outbox publishes later; see docs/architecture.md, failures) and
catch :class:`RedisUnavailable`.
"""

from __future__ import annotations

import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from whatschat.config import get_settings
from whatschat.problems import DependencyUnavailable

RedisError = redis.RedisError


class RedisUnavailable(DependencyUnavailable):
    """Redis did not answer in time."""

    dependency = "Redis"


# (URL, client): replaced whole, so a reader never pairs one URL with another's client.
_current: tuple[str, redis.Redis] | None = None
_lock = threading.Lock()


def client() -> redis.Redis:
    """The process's Redis client (a connection pool inside); raises
    ``redis.ConnectionError`` (a RedisError) while REDIS_URL is unset."""
    global _current
    url = get_settings().redis_url
    current = _current
    if current is not None and current[0] == url:
        return current[1]  # every command passes here: no lock once it exists
    if not url:
        # Unset is unavailable, with everything that means for the caller
        # (limits fail open, events wait in the outbox), not a ValueError
        # (a 500) from every request that touches Redis.
        raise redis.ConnectionError("REDIS_URL is not set")
    with _lock:
        if _current is None or _current[0] != url:
            if _current is not None:
                _current[1].close()
            settings = get_settings()
            _current = (
                url,
                redis.Redis.from_url(
                    url,
                    # One immediate retry (a pooled connection broken by a
                    # Redis restart), no backoff: callers fall back (outbox,
                    # local counters) rather than wait on a hung Redis.
                    retry=Retry(NoBackoff(), 1),
                    socket_timeout=settings.redis_timeout_seconds,
                    socket_connect_timeout=settings.redis_timeout_seconds,
                    health_check_interval=30,
                ),
            )
        return _current[1]


def publish(channel: str, payload: bytes) -> int:
    """PUBLISH once; return how many subscribers got it. Raises RedisUnavailable."""
    try:
        return int(client().publish(channel, payload))  # type: ignore[arg-type]
    except redis.RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc


def count(key: str, ttl_seconds: int) -> int:
    """INCR ``key``; give a new key (count 1) a TTL. Raises RedisError.

    One round trip per call but the first of a key's life: a pipeline or a
    script costs more per call than the rare second command.
    """
    redis = client()
    value = int(redis.incr(key))  # type: ignore[arg-type]
    if value == 1:
        redis.expire(key, ttl_seconds)
    return value


def ping() -> None:
    """Raise RedisUnavailable unless Redis answers PING."""
    try:
        client().ping()
    except redis.RedisError as exc:
        raise RedisUnavailable(str(exc)) from exc
