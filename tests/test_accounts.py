"""Register, login, own profile and user lookup, through the real function loading path."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import jwt
import psycopg
import pytest
from argon2 import PasswordHasher, extract_parameters

from tests import auth_fixtures
from tests.auth_fixtures import (
    PASSWORD,
    assert_problem,
    bearer,
    count_rows,
    login,
    register,
)
from tests.conftest import AppUser
from whatschat import passwords, tokens

# Shared fixtures (tests/auth_fixtures.py), made fixtures of this module.
auth_env = auth_fixtures.auth_env
auth_settings = auth_fixtures.auth_settings
pytestmark = pytest.mark.usefixtures("auth_env")


@pytest.fixture
def reg(function_client: Callable[[str], Any]) -> Any:
    return function_client("register")


@pytest.fixture
def log(function_client: Callable[[str], Any]) -> Any:
    return function_client("login")


@pytest.fixture
def me(function_client: Callable[[str], Any]) -> Any:
    return function_client("me")


@pytest.fixture
def users(function_client: Callable[[str], Any]) -> Any:
    return function_client("users")


# --- register ---------------------------------------------------------------------


def test_register_returns_the_profile_and_a_working_token_pair(
    reg: Any, me: Any, db: psycopg.Connection[Any]
) -> None:
    body = register(reg, "Alice.B", display_name="  Alice B  ", device_name="Pixel 8")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900 and body["refresh_expires_in"] == 30 * 24 * 3600
    assert body["user"]["username"] == "Alice.B" and body["user"]["display_name"] == "Alice B"
    assert body["refresh_token"].startswith("wcr_")

    claims = tokens.verify_access_token(body["access_token"])
    assert claims.user_id == body["user"]["id"] and claims.username == "Alice.B"
    profile = me.get("/v1/me", headers=bearer(body["access_token"]))
    assert profile.status_code == 200 and profile.get_json()["display_name"] == "Alice B"

    row = db.execute(
        "SELECT u.password_hash, f.device_name FROM users u"
        " JOIN refresh_families f ON f.user_id = u.id"
    ).fetchone()
    assert row is not None
    stored_hash, device = row
    assert stored_hash.startswith("$argon2id$") and PASSWORD not in stored_hash
    assert device == "Pixel 8"
    assert count_rows(db) == {"users": 1, "refresh_families": 1, "refresh_tokens": 1}
    refresh_row = db.execute("SELECT token_hash FROM refresh_tokens").fetchone()
    assert refresh_row is not None and body["refresh_token"].encode() not in bytes(refresh_row[0])


def test_duplicate_username_is_409_ignoring_letter_case(
    reg: Any, db: psycopg.Connection[Any]
) -> None:
    register(reg, "Alice")
    response = reg.post(
        "/v1/auth/register",
        json={"username": "aLICE", "display_name": "Other", "password": "another password"},
    )
    assert_problem(response, 409, "username-taken")
    assert count_rows(db) == {"users": 1, "refresh_families": 1, "refresh_tokens": 1}


VALID = {"username": "bob", "display_name": "Bob", "password": PASSWORD}


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"username": "bob"}, {"display_name", "password"}),
        ({**VALID, "password": 12345678}, {"password"}),
        ({**VALID, "password": "short"}, {"password"}),
        ({**VALID, "password": "x" * 257}, {"password"}),
        ({**VALID, "username": "no spaces"}, {"username"}),
        ({**VALID, "username": "ab"}, {"username"}),
        ({**VALID, "username": "a" * 33}, {"username"}),
        ({**VALID, "username": "bob\u0000"}, {"username"}),
        ({**VALID, "display_name": "   "}, {"display_name"}),
        ({**VALID, "display_name": "x" * 65}, {"display_name"}),
        ({**VALID, "display_name": "tab\there"}, {"display_name"}),
        ({**VALID, "device_name": "nul\u0000"}, {"device_name"}),
        ({**VALID, "is_admin": True}, {"is_admin"}),
        ({**VALID, "username": ["bob"]}, {"username"}),
    ],
)
def test_register_invalid_fields_are_422_and_write_nothing(
    reg: Any, db: psycopg.Connection[Any], body: dict[str, Any], fields: set[str]
) -> None:
    problem = assert_problem(reg.post("/v1/auth/register", json=body), 422, "validation-failed")
    assert {error["field"] for error in problem["errors"]} == fields
    assert "x" * 65 not in json.dumps(problem)  # inputs are not echoed back
    assert count_rows(db) == {"users": 0, "refresh_families": 0, "refresh_tokens": 0}


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b'{"username": "bob",', "application/json", 400, "malformed-request"),
        (b"\xff\xfe not utf-8", "application/json", 400, "malformed-request"),
        (json.dumps(VALID).encode(), "text/plain", 415, "unsupported-media-type"),
        (b"username=bob&password=secret123", "application/x-www-form-urlencoded", 415,
         "unsupported-media-type"),
        (json.dumps({**VALID, "display_name": "x" * 70_000}).encode(), "application/json", 413,
         "payload-too-large"),
        (b"[1, 2, 3]", "application/json", 422, "validation-failed"),
        (b"null", "application/json", 422, "validation-failed"),
    ],
)  # fmt: skip
def test_register_malformed_requests_are_4xx_and_write_nothing(
    reg: Any, db: psycopg.Connection[Any], data: bytes, content_type: str, status: int, code: str
) -> None:
    response = reg.post("/v1/auth/register", data=data, content_type=content_type)
    assert_problem(response, status, code)
    assert count_rows(db) == {"users": 0, "refresh_families": 0, "refresh_tokens": 0}


def test_register_wrong_method_and_path(reg: Any) -> None:
    assert_problem(reg.get("/v1/auth/register"), 405, "method-not-allowed")
    assert_problem(reg.post("/v1/auth/nowhere", json=VALID), 404, "not-found")


def test_registrations_are_throttled_per_address(
    reg: Any, db: psycopg.Connection[Any], auth_settings: Callable[..., None]
) -> None:
    auth_settings(REGISTRATIONS_PER_ADDRESS_PER_HOUR="2", TRUSTED_PROXY_HOPS="1")
    headers = {"X-Forwarded-For": "198.51.100.4"}
    for name in ("first", "second"):
        body = {**VALID, "username": name}
        assert reg.post("/v1/auth/register", json=body, headers=headers).status_code == 201
    response = reg.post("/v1/auth/register", json={**VALID, "username": "third"}, headers=headers)
    assert_problem(response, 429, "rate-limited")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert count_rows(db)["users"] == 2
    other = reg.post(
        "/v1/auth/register",
        json={**VALID, "username": "fourth"},
        headers={"X-Forwarded-For": "198.51.100.5"},
    )
    assert other.status_code == 201


# --- login ------------------------------------------------------------------------


def test_login_gives_a_new_session_per_device(
    reg: Any, log: Any, me: Any, db: psycopg.Connection[Any]
) -> None:
    registered = register(reg, "carol")
    response = log.post(
        "/v1/auth/login",
        json={"username": "CAROL", "password": PASSWORD, "device_name": "laptop"},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "user",
    }
    assert body["user"] == registered["user"]  # the stored spelling, not the typed one
    assert body["refresh_token"] != registered["refresh_token"]
    assert me.get("/v1/me", headers=bearer(body["access_token"])).status_code == 200
    devices = [row[0] for row in db.execute("SELECT device_name FROM refresh_families")]
    assert sorted(devices) == ["", "laptop"]


def test_wrong_password_and_unknown_user_are_indistinguishable(
    reg: Any, log: Any, db: psycopg.Connection[Any]
) -> None:
    register(reg, "dave")
    wrong = log.post("/v1/auth/login", json={"username": "dave", "password": "not the password"})
    unknown = log.post("/v1/auth/login", json={"username": "nobody", "password": PASSWORD})
    body = assert_problem(wrong, 401, "invalid-credentials")
    assert unknown.status_code == wrong.status_code
    assert unknown.get_json(force=True) == body
    assert dict(unknown.headers) == dict(wrong.headers)
    assert count_rows(db) == {"users": 1, "refresh_families": 1, "refresh_tokens": 1}


class CountingHasher(PasswordHasher):
    """The real argon2id hasher (same parameters), counting verifications."""

    def __init__(self, real: PasswordHasher) -> None:
        super().__init__(
            time_cost=real.time_cost,
            memory_cost=real.memory_cost,
            parallelism=real.parallelism,
            hash_len=real.hash_len,
            salt_len=real.salt_len,
            type=real.type,
        )
        self.verified: list[str] = []  # the hash each verification checked against

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return super().verify(hash, password)


def test_unknown_user_costs_one_argon2_verification_like_a_wrong_password(
    reg: Any, log: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing: both failures run exactly one full argon2id verification.

    (Measured side by side by bench/auth_bench.py; a test does not time.)
    """
    register(reg, "dora")
    counting = CountingHasher(passwords.hasher())
    monkeypatch.setattr(passwords, "hasher", lambda: counting)

    assert login(log, "dora", "not the password").status_code == 401
    assert login(log, "nobody", PASSWORD).status_code == 401
    assert len(counting.verified) == 2
    real, dummy = counting.verified
    assert real.startswith("$argon2id$") and dummy.startswith("$argon2id$") and real != dummy
    assert extract_parameters(real) == extract_parameters(dummy)


def test_an_account_without_an_argon2_hash_cannot_log_in(
    log: Any, make_user: Callable[..., AppUser]
) -> None:
    user = make_user("imported")  # stored hash is not an argon2 hash
    assert_problem(login(log, user.username, "not-a-real-hash"), 401, "invalid-credentials")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"username": "dave"}, 422, "validation-failed"),
        ({"username": "dave", "password": None}, 422, "validation-failed"),
        ({"username": "dave", "password": PASSWORD, "remember": True}, 422, "validation-failed"),
        ({"username": "dave", "password": "y" * 10_000}, 422, "validation-failed"),
    ],
)
def test_login_invalid_fields_are_422_and_write_nothing(
    reg: Any, log: Any, db: psycopg.Connection[Any], body: dict[str, Any], status: int, code: str
) -> None:
    register(reg, "dave")
    assert_problem(log.post("/v1/auth/login", json=body), status, code)
    assert log.post("/v1/auth/login", data=b"{", content_type="application/json").status_code == 400
    assert log.post("/v1/auth/login", data=json.dumps(body)).status_code == 415
    assert count_rows(db) == {"users": 1, "refresh_families": 1, "refresh_tokens": 1}


def test_login_upgrades_the_stored_hash_when_parameters_change(
    reg: Any, log: Any, db: psycopg.Connection[Any], auth_settings: Callable[..., None]
) -> None:
    register(reg, "erin")
    auth_settings(ARGON2_TIME_COST="2", ARGON2_MEMORY_KIB="2048")
    assert login(log, "erin").status_code == 200
    row = db.execute("SELECT password_hash FROM users").fetchone()
    assert row is not None
    upgraded = extract_parameters(row[0])
    assert (upgraded.time_cost, upgraded.memory_cost) == (2, 2048)
    assert login(log, "erin").status_code == 200  # the new hash verifies


# --- access tokens ----------------------------------------------------------------


def _forged(claims: dict[str, Any], kid: str, key: Any = None, algorithm: str = "EdDSA") -> str:
    signing = key if key is not None else tokens.generate_key_pair().private_pem
    return jwt.encode(claims, signing, algorithm=algorithm, headers={"kid": kid})


def test_expired_tampered_and_foreign_tokens_are_401(reg: Any, me: Any) -> None:
    body = register(reg, "frank")
    user_id = body["user"]["id"]
    expired, _ = tokens.issue_access_token(user_id, "frank", now=time.time() - 3600)

    header, payload, signature = body["access_token"].split(".")
    other_payload = jwt.utils.base64url_encode(
        json.dumps({"sub": str(user_id + 1), "name": "frank", "iss": "whatschat",
                    "iat": int(time.time()), "exp": int(time.time()) + 600}).encode()
    ).decode()  # fmt: skip
    tampered = f"{header}.{other_payload}.{signature}"
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    now = int(time.time())
    claims = {"sub": str(user_id), "name": "frank", "iss": "whatschat", "iat": now,
              "exp": now + 600}  # fmt: skip
    same_kid_other_key = _forged(claims, kid="test-key")
    unknown_kid = _forged(claims, kid="rotated-out")
    hmac_confusion = _forged(claims, kid="test-key", key="secret" * 6, algorithm="HS256")
    unsigned = jwt.encode(claims, "", algorithm="none", headers={"kid": "test-key"})

    assert me.get("/v1/me", headers=bearer(body["access_token"])).status_code == 200
    for token in (
        expired,
        tampered,
        f"{header}.{payload}.{flipped}",
        same_kid_other_key,
        unknown_kid,
        hmac_confusion,
        unsigned,
        "not-a-jwt",
    ):
        response = me.get("/v1/me", headers=bearer(token))
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


# --- own profile and lookup -------------------------------------------------------


def test_own_profile_get_and_update(reg: Any, me: Any, db: psycopg.Connection[Any]) -> None:
    token = register(reg, "gina")["access_token"]
    got = me.get("/v1/me", headers=bearer(token)).get_json()
    assert got["username"] == "gina" and got["display_name"] == "Gina"
    assert {"id", "created_at", "updated_at"} <= set(got)

    patched = me.patch("/v1/me", json={"display_name": "  Gina G. "}, headers=bearer(token))
    assert patched.status_code == 200 and patched.get_json()["display_name"] == "Gina G."
    assert me.get("/v1/me", headers=bearer(token)).get_json()["display_name"] == "Gina G."

    for bad in ({}, {"display_name": ""}, {"display_name": None}, {"username": "root"}):
        assert_problem(me.patch("/v1/me", json=bad, headers=bearer(token)), 422,
                       "validation-failed")  # fmt: skip
    assert_problem(me.patch("/v1/me", json={"display_name": "X"}), 401, "unauthorized")
    assert_problem(me.put("/v1/me", json={"display_name": "X"}, headers=bearer(token)), 405,
                   "method-not-allowed")  # fmt: skip
    row = db.execute("SELECT display_name FROM users").fetchone()
    assert row is not None and row[0] == "Gina G."


def test_own_profile_of_a_deleted_account_is_404(
    reg: Any, me: Any, db: psycopg.Connection[Any]
) -> None:
    token = register(reg, "henry")["access_token"]
    db.execute("DELETE FROM users")
    assert_problem(me.get("/v1/me", headers=bearer(token)), 404, "not-found")


def test_user_lookup_ignores_letter_case(reg: Any, users: Any) -> None:
    ivy = register(reg, "Ivy.Q")
    token = register(reg, "jack")["access_token"]
    found = users.get("/v1/users/ivy.q", headers=bearer(token))
    assert found.status_code == 200
    assert found.get_json() == ivy["user"]
    assert_problem(users.get("/v1/users/nobody", headers=bearer(token)), 404, "not-found")
    assert_problem(users.get("/v1/users/bad%00name", headers=bearer(token)), 404, "not-found")
    assert_problem(users.get("/v1/users/ivy.q"), 401, "unauthorized")
