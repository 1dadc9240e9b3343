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


_client: redis.Redis | None = None
_client_url = ""
_lock = threading.Lock()


def client() -> redis.Redis:
    """The process's Redis client (a connection pool inside)."""
    global _client, _client_url
    settings = get_settings()
    with _lock:
        if _client is None or _client_url != settings.redis_url:
            if _client is not None:
                _client.close()
            _client = redis.Redis.from_url(
                settings.redis_url,
                # One immediate retry (a pooled connection broken by a Redis
                # restart), no backoff: callers fall back (outbox, local
                # counters) rather than wait on a hung Redis.
                retry=Retry(NoBackoff(), 1),
                socket_timeout=settings.redis_timeout_seconds,
                socket_connect_timeout=settings.redis_timeout_seconds,
                health_check_interval=30,
            )
            _client_url = settings.redis_url
        return _client


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
