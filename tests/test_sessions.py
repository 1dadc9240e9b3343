"""Refresh-token families: rotation, reuse detection, expiry, logout."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests import auth_fixtures
from tests.auth_fixtures import (
    assert_problem,
    bearer,
    count_rows,
    login,
    register,
)

# Shared fixtures (tests/auth_fixtures.py), made fixtures of this module.
auth_env = auth_fixtures.auth_env
pytestmark = pytest.mark.usefixtures("auth_env")


@pytest.fixture
def clients(function_client: Callable[[str], Any]) -> dict[str, Any]:
    return {
        name: function_client(name) for name in ("register", "login", "refresh", "logout", "me")
    }


def _refresh(clients: dict[str, Any], token: str) -> Any:
    return clients["refresh"].post("/v1/auth/refresh", json={"refresh_token": token})


def _families(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return [
        tuple(row)
        for row in db.execute(
            "SELECT device_name, revoked_at IS NOT NULL, revoked_reason FROM refresh_families"
            " ORDER BY created_at, device_name"
        )
    ]


def test_refresh_rotates_both_tokens(clients: dict[str, Any], db: psycopg.Connection[Any]) -> None:
    first = register(clients["register"], "alice")
    second = _refresh(clients, first["refresh_token"])
    assert second.status_code == 200
    body = second.get_json()
    assert body["user"] == first["user"] and body["token_type"] == "Bearer"
    assert body["refresh_token"] != first["refresh_token"]
    assert clients["me"].get("/v1/me", headers=bearer(body["access_token"])).status_code == 200
    third = _refresh(clients, body["refresh_token"])
    assert third.status_code == 200
    rotated = db.execute("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL")
    assert rotated.fetchone() == (2,)
    assert count_rows(db) == {"users": 1, "refresh_families": 1, "refresh_tokens": 3}


def test_refresh_reflects_a_changed_display_name(clients: dict[str, Any]) -> None:
    first = register(clients["register"], "bob")
    clients["me"].patch(
        "/v1/me", json={"display_name": "Robert"}, headers=bearer(first["access_token"])
    )
    body = _refresh(clients, first["refresh_token"]).get_json()
    assert body["user"]["display_name"] == "Robert"


def test_reusing_a_rotated_token_revokes_the_whole_family(
    clients: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    phone = register(clients["register"], "carol", device_name="phone")
    laptop = clients["login"].post(
        "/v1/auth/login",
        json={"username": "carol", "password": "correct horse battery", "device_name": "laptop"},
    )
    newest = _refresh(clients, phone["refresh_token"]).get_json()["refresh_token"]

    # Someone presents the phone's old token again: a copy exists somewhere.
    reuse = _refresh(clients, phone["refresh_token"])
    body = assert_problem(reuse, 401, "invalid-refresh-token")
    assert "already used" in body["detail"]
    # The phone's newest token dies with its family; the laptop's session lives on.
    assert_problem(_refresh(clients, newest), 401, "invalid-refresh-token")
    assert _refresh(clients, laptop.get_json()["refresh_token"]).status_code == 200
    assert _families(db) == [("phone", True, "reuse"), ("laptop", False, None)]


def test_concurrent_exchanges_of_one_token_succeed_at_most_once(
    clients: dict[str, Any], function_client: Callable[[str], Any], db: psycopg.Connection[Any]
) -> None:
    token = register(clients["register"], "dave")["refresh_token"]
    statuses: list[int] = []
    start = threading.Barrier(4)

    def exchange() -> None:
        client = function_client("refresh")
        start.wait()
        statuses.append(client.post("/v1/auth/refresh", json={"refresh_token": token}).status_code)

    threads = [threading.Thread(target=exchange) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == [200, 401, 401, 401]
    assert _families(db) == [("", True, "reuse")]


def test_unknown_and_expired_refresh_tokens_are_401_without_revoking(
    clients: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    token = register(clients["register"], "erin")["refresh_token"]
    assert_problem(_refresh(clients, "wcr_" + "A" * 43), 401, "invalid-refresh-token")
    db.execute("UPDATE refresh_tokens SET expires_at = now() - interval '1 second'")
    body = assert_problem(_refresh(clients, token), 401, "invalid-refresh-token")
    assert "expired" in body["detail"]
    assert _families(db) == [("", False, None)]


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"refresh_token": ', "application/json", 400, "malformed-request"),
        (b'{"refresh_token": "x"}', "text/plain", 415, "unsupported-media-type"),
        (b"{}", "application/json", 422, "validation-failed"),
        (b'{"refresh_token": 12}', "application/json", 422, "validation-failed"),
        (b'{"refresh_token": ""}', "application/json", 422, "validation-failed"),
        (b'{"refresh_token": "x", "extra": 1}', "application/json", 422, "validation-failed"),
        (b'{"refresh_token": "' + b"x" * 70_000 + b'"}', "application/json", 413,
         "payload-too-large"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("target", ["refresh", "logout"])
def test_refresh_and_logout_reject_malformed_requests_and_write_nothing(
    clients: dict[str, Any],
    db: psycopg.Connection[Any],
    target: str,
    data: bytes,
    content_type: str,
    status: int,
    code: str,
) -> None:
    register(clients["register"], "frank")
    before = count_rows(db)
    path = f"/v1/auth/{target}"
    assert_problem(clients[target].post(path, data=data, content_type=content_type), status, code)
    assert count_rows(db) == before
    assert _families(db) == [("", False, None)]


def test_logout_ends_only_that_device_and_is_idempotent(
    clients: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    phone = register(clients["register"], "gina", device_name="phone")
    laptop = login(clients["login"], "gina").get_json()
    logout = clients["logout"]

    response = logout.post("/v1/auth/logout", json={"refresh_token": phone["refresh_token"]})
    assert response.status_code == 204 and response.data == b""
    assert_problem(_refresh(clients, phone["refresh_token"]), 401, "invalid-refresh-token")
    assert _refresh(clients, laptop["refresh_token"]).status_code == 200
    # Again, and with a token nobody issued: still 204, nothing else changes.
    again = logout.post("/v1/auth/logout", json={"refresh_token": phone["refresh_token"]})
    assert again.status_code == 204
    unknown = logout.post("/v1/auth/logout", json={"refresh_token": "wcr_unknown"})
    assert unknown.status_code == 204
    assert _families(db) == [("phone", True, "logout"), ("", False, None)]


def test_logout_with_an_old_token_of_the_family_also_ends_it(
    clients: dict[str, Any], db: psycopg.Connection[Any]
) -> None:
    first = register(clients["register"], "henry")
    newest = _refresh(clients, first["refresh_token"]).get_json()["refresh_token"]
    response = clients["logout"].post(
        "/v1/auth/logout", json={"refresh_token": first["refresh_token"]}
    )
    assert response.status_code == 204
    assert_problem(_refresh(clients, newest), 401, "invalid-refresh-token")
