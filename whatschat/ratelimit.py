"""Rate limits kept in Redis: at most ``limit`` hits per ``window`` seconds per key.

A fixed-window counter, one INCR per hit (the window's first hit also sets
its expiry): cheap, shared by every instance of a function, and good enough
for abuse control. The window's index is part of the key, so a key whose
EXPIRE was lost (a crash between the two commands) only wastes a few bytes:
no later window ever counts on it. Each caller
decides what happens when Redis is down (``fail_open``); docs/auth.md and
docs/messaging.md say what each limit does.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from whatschat.storage import redis_client


@dataclass(frozen=True)
class Limit:
    """A named limit: ``limit`` hits per ``window`` seconds."""

    name: str  # part of the Redis key, e.g. "login-user"
    limit: int
    window: int  # seconds


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: int  # seconds until the window resets (0 when allowed)


def _key(limit: Limit, subject: str, now: float) -> tuple[str, int]:
    window_index = int(now // limit.window)
    reset_in = limit.window - int(now % limit.window)
    return f"wc:rl:{limit.name}:{subject}:{window_index}", reset_in


def hit(limit: Limit, subject: str, *, fail_open: bool, now: float | None = None) -> Decision:
    """Count one hit for ``subject``; say whether it is within the limit.

    When Redis is unreachable: allowed if ``fail_open``, else refused with a
    short retry (callers that fail closed turn this into 503, not 429).
    """
    key, reset_in = _key(limit, subject, now if now is not None else time.time())
    try:
        count = redis_client.count(key, limit.window + 1)
    except redis_client.RedisError as exc:
        if fail_open:
            return Decision(True, limit.limit, 0)
        raise redis_client.RedisUnavailable(str(exc)) from exc
    if count > limit.limit:
        return Decision(False, 0, reset_in)
    return Decision(True, limit.limit - count, 0)


def peek(limit: Limit, subject: str, *, now: float | None = None) -> Decision:
    """The current state without counting a hit (e.g. refuse before checking a password).

    Raises RedisUnavailable when Redis is down.
    """
    key, reset_in = _key(limit, subject, now if now is not None else time.time())
    try:
        raw = redis_client.client().get(key)
    except redis_client.RedisError as exc:
        raise redis_client.RedisUnavailable(str(exc)) from exc
    count = int(raw) if raw is not None else 0  # type: ignore[arg-type]
    if count >= limit.limit:
        return Decision(False, 0, reset_in)
    return Decision(True, limit.limit - count, 0)


def reset(limit: Limit, subject: str, *, now: float | None = None) -> None:
    """Forget the hits of the current window (e.g. after a successful login). Best effort."""
    key, _ = _key(limit, subject, now if now is not None else time.time())
    with contextlib.suppress(redis_client.RedisError):
        redis_client.client().delete(key)
