"""Throttling of failed logins and of registrations, in Redis, with a local fallback.

Failed logins are counted per username and per client address
(:class:`LoginGuard`); registrations per client address
(:func:`check_registration`). Limits are fixed windows in Redis
(:mod:`whatschat.ratelimit`), shared by every instance of a function.

When Redis is unreachable we neither refuse every login (fail closed: a Redis
outage would lock everybody out while access tokens keep working) nor drop
throttling (fail open: an outage would open the door to password guessing).
Each instance counts in its own memory instead until Redis answers again, so
guessing stays bounded per instance. docs/auth.md explains the choice.
"""

from __future__ import annotations

import logging
import threading
import time

from whatschat import ratelimit
from whatschat.config import get_settings
from whatschat.problems import rate_limited
from whatschat.storage import redis_client

logger = logging.getLogger(__name__)


class LocalCounter:
    """Fixed-window counters in this process's memory: the limiter while Redis is down."""

    # Bound on remembered (limit, subject, window) keys; beyond it old windows are dropped.
    MAX_KEYS = 100_000

    def __init__(self) -> None:
        # (limit name, subject, window length, window index) -> hits
        self._counts: dict[tuple[str, str, int, int], int] = {}
        self._lock = threading.Lock()  # request threads of one instance share the counts

    def _key(
        self, limit: ratelimit.Limit, subject: str, now: float
    ) -> tuple[tuple[str, str, int, int], int]:
        reset_in = limit.window - int(now % limit.window)
        return (limit.name, subject, limit.window, int(now // limit.window)), reset_in

    def hit(self, limit: ratelimit.Limit, subject: str, now: float) -> ratelimit.Decision:
        key, reset_in = self._key(limit, subject, now)
        with self._lock:
            if len(self._counts) >= self.MAX_KEYS:
                self._forget_old(now)
            count = self._counts[key] = self._counts.get(key, 0) + 1
        if count > limit.limit:
            return ratelimit.Decision(False, 0, reset_in)
        return ratelimit.Decision(True, limit.limit - count, 0)

    def peek(self, limit: ratelimit.Limit, subject: str, now: float) -> ratelimit.Decision:
        key, reset_in = self._key(limit, subject, now)
        with self._lock:
            count = self._counts.get(key, 0)
        if count >= limit.limit:
            return ratelimit.Decision(False, 0, reset_in)
        return ratelimit.Decision(True, limit.limit - count, 0)

    def reset(self, limit: ratelimit.Limit, subject: str, now: float) -> None:
        key, _ = self._key(limit, subject, now)
        with self._lock:
            self._counts.pop(key, None)

    def clear(self) -> None:
        """Forget every count (tests, and nothing else needs it)."""
        with self._lock:
            self._counts.clear()

    def _forget_old(self, now: float) -> None:
        # Keys of past windows are dead weight; if every key is current, start over
        # rather than grow without bound (an attacker spraying usernames).
        live = {key: count for key, count in self._counts.items() if key[3] >= int(now // key[2])}
        self._counts = live if len(live) < self.MAX_KEYS else {}


local_counter = LocalCounter()  # this process's fallback while Redis is down


def login_limits() -> tuple[ratelimit.Limit, ratelimit.Limit]:
    """The per-username and per-address limits on failed logins, from settings."""
    s = get_settings()
    window = s.login_throttle_window_seconds
    return (
        ratelimit.Limit("login-user", s.login_max_failures_per_username, window),
        ratelimit.Limit("login-address", s.login_max_failures_per_address, window),
    )


def registration_limit() -> ratelimit.Limit:
    """Registrations allowed per client address per hour."""
    return ratelimit.Limit(
        "register-address", get_settings().registrations_per_address_per_hour, 3600
    )


class _Counters:
    """Redis while it answers, then this process's memory for the rest of the request.

    One object per request: after the first Redis failure the request stops
    asking Redis, so a hung Redis costs a login at most one timeout.
    """

    def __init__(self) -> None:
        self.redis_ok = True  # False after the first Redis failure in this request

    def _fallback(self, exc: Exception) -> None:
        if self.redis_ok:
            logger.warning("Redis unavailable for throttling, counting locally: %s", exc)
        self.redis_ok = False

    def peek(self, limit: ratelimit.Limit, subject: str) -> ratelimit.Decision:
        now = time.time()
        if self.redis_ok:
            try:
                return ratelimit.peek(limit, subject, now=now)
            except redis_client.RedisUnavailable as exc:
                self._fallback(exc)
        return local_counter.peek(limit, subject, now)

    def hit(self, limit: ratelimit.Limit, subject: str) -> ratelimit.Decision:
        now = time.time()
        if self.redis_ok:
            try:
                return ratelimit.hit(limit, subject, fail_open=False, now=now)
            except redis_client.RedisUnavailable as exc:
                self._fallback(exc)
        return local_counter.hit(limit, subject, now)

    def reset(self, limit: ratelimit.Limit, subject: str) -> None:
        now = time.time()
        if self.redis_ok:
            ratelimit.reset(limit, subject, now=now)  # best effort, never raises
        local_counter.reset(limit, subject, now)


class LoginGuard:
    """The throttle of one login attempt: check before the password, record after.

    Counts only failures, so a user who types the right password is never
    slowed down by their own successful logins. Unknown usernames are counted
    like known ones (otherwise throttling would reveal which names exist).
    """

    def __init__(self, username: str, client_address: str) -> None:
        self.username = username.lower()  # usernames are unique case-insensitively
        self.address = client_address  # the caller's IP (Call.client_address)
        self._counters = _Counters()  # Redis, or local memory once Redis failed
        self._by_user, self._by_address = login_limits()

    def check(self) -> None:
        """Raise a 429 problem (with Retry-After) when either limit is used up.

        Called before verifying the password: a throttled attempt costs no
        argon2 time and says nothing about whether the password was right.
        """
        blocked = [
            decision.retry_after
            for decision in (
                self._counters.peek(self._by_user, self.username),
                self._counters.peek(self._by_address, self.address),
            )
            if not decision.allowed
        ]
        if blocked:
            raise rate_limited(max(blocked), "Too many failed logins; retry later")

    def failed(self) -> None:
        """Count a failed attempt against the username and the address."""
        self._counters.hit(self._by_user, self.username)
        self._counters.hit(self._by_address, self.address)

    def succeeded(self) -> None:
        """Forget the username's failures (not the address's: one valid account must
        not let an address reset its count while guessing at others)."""
        self._counters.reset(self._by_user, self.username)


def check_registration(client_address: str) -> None:
    """Count one registration from ``client_address``; raise 429 beyond the hourly limit."""
    decision = _Counters().hit(registration_limit(), client_address)
    if not decision.allowed:
        raise rate_limited(decision.retry_after, "Too many registrations from your address")
