"""Failed logins are throttled per username and per client address, also with Redis down."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests import auth_fixtures
from tests.auth_fixtures import (
    assert_problem,
    login,
    register,
)
from whatschat import auth_throttle, embedded, ratelimit
from whatschat.storage import redis_client

# Shared fixtures (tests/auth_fixtures.py), made fixtures of this module.
auth_env = auth_fixtures.auth_env
auth_settings = auth_fixtures.auth_settings
pytestmark = pytest.mark.usefixtures("auth_env")

WRONG = "wrong password!"


@pytest.fixture
def clients(function_client: Callable[[str], Any]) -> dict[str, Any]:
    return {name: function_client(name) for name in ("register", "login", "refresh")}


def _fail(client: Any, username: str, times: int, address: str = "192.0.2.1") -> None:
    for _ in range(times):
        assert_problem(login(client, username, WRONG, address), 401, "invalid-credentials")


def test_failures_per_username_trigger_429_with_retry_after(
    clients: dict[str, Any], auth_settings: Callable[..., None]
) -> None:
    auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="3", LOGIN_THROTTLE_WINDOW_SECONDS="600")
    register(clients["register"], "alice")
    register(clients["register"], "bob")
    _fail(clients["login"], "alice", 3)

    # Even the right password is refused now, from any address, in any letter case.
    for name, address in (("alice", "192.0.2.1"), ("ALICE", "192.0.2.99")):
        response = login(clients["login"], name, address=address)
        body = assert_problem(response, 429, "rate-limited")
        assert 1 <= int(response.headers["Retry-After"]) <= 600
        assert body["retry_after"] == int(response.headers["Retry-After"])
    # Another account from the same address is not affected.
    assert login(clients["login"], "bob", address="192.0.2.1").status_code == 200


def test_unknown_usernames_are_throttled_like_known_ones(
    clients: dict[str, Any], auth_settings: Callable[..., None]
) -> None:
    auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="2")
    register(clients["register"], "carol")
    _fail(clients["login"], "carol", 2)
    _fail(clients["login"], "ghost", 2)
    known = login(clients["login"], "carol", WRONG)
    unknown = login(clients["login"], "ghost", WRONG)
    assert_problem(known, 429, "rate-limited")
    assert unknown.get_json(force=True) == known.get_json(force=True)


def test_failures_per_address_trigger_429_across_usernames(
    clients: dict[str, Any], auth_settings: Callable[..., None]
) -> None:
    # Behind one proxy (the ingress), which appends the client's address.
    auth_settings(
        LOGIN_MAX_FAILURES_PER_USERNAME="100",
        LOGIN_MAX_FAILURES_PER_ADDRESS="4",
        TRUSTED_PROXY_HOPS="1",
    )
    register(clients["register"], "dave")
    for name in ("u1.x", "u2.x", "u3.x", "dave"):
        _fail(clients["login"], name, 1, address="203.0.113.7")
    assert_problem(login(clients["login"], "dave", address="203.0.113.7"), 429, "rate-limited")
    # Another client logs in fine; what it claims further left is not trusted.
    assert login(clients["login"], "dave", address="203.0.113.7, 203.0.113.8").status_code == 200


def test_a_successful_login_clears_the_username_count(
    clients: dict[str, Any], auth_settings: Callable[..., None]
) -> None:
    auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="3")
    register(clients["register"], "erin")
    _fail(clients["login"], "erin", 2)
    assert login(clients["login"], "erin").status_code == 200
    _fail(clients["login"], "erin", 2)
    assert login(clients["login"], "erin").status_code == 200


def test_throttling_expires_with_its_window(
    clients: dict[str, Any], auth_settings: Callable[..., None]
) -> None:
    window = 2
    auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="2", LOGIN_THROTTLE_WINDOW_SECONDS=str(window))
    register(clients["register"], "frank")
    # Start just after a window boundary so every failure lands in the same window.
    time.sleep(window - time.time() % window + 0.05)
    _fail(clients["login"], "frank", 2)
    refused = login(clients["login"], "frank")
    assert_problem(refused, 429, "rate-limited")
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= window
    time.sleep(retry_after)
    assert login(clients["login"], "frank").status_code == 200


def test_with_redis_down_logins_work_and_failures_are_counted_locally(
    clients: dict[str, Any],
    auth_settings: Callable[..., None],
    own_redis: embedded.EmbeddedRedis,
) -> None:
    auth_settings(LOGIN_MAX_FAILURES_PER_USERNAME="3", LOGIN_THROTTLE_WINDOW_SECONDS="600")
    register(clients["register"], "gina")
    _fail(clients["login"], "gina", 1)  # counted in Redis while it is up

    own_redis.stop()
    with pytest.raises(redis_client.RedisUnavailable):
        redis_client.ping()

    # Fail open for people: logging in, registering and refreshing keep working...
    session = login(clients["login"], "gina")
    assert session.status_code == 200
    register(clients["register"], "henry")
    refreshed = clients["refresh"].post(
        "/v1/auth/refresh", json={"refresh_token": session.get_json()["refresh_token"]}
    )
    assert refreshed.status_code == 200
    # ...but not for guessing: this instance counts failures in memory.
    _fail(clients["login"], "gina", 3)
    response = login(clients["login"], "gina")
    assert_problem(response, 429, "rate-limited")
    assert int(response.headers["Retry-After"]) >= 1

    # Redis is back and counts again. The outage's local counts no longer apply
    # (this Redis kept no data, so Gina starts from zero).
    own_redis.start()
    redis_client.ping()
    assert login(clients["login"], "gina").status_code == 200
    _fail(clients["login"], "gina", 3)
    assert_problem(login(clients["login"], "gina"), 429, "rate-limited")
    by_user, _ = auth_throttle.login_limits()
    assert not ratelimit.peek(by_user, "gina").allowed  # counted in Redis this time
