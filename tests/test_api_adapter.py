"""The HTTP adapter: every bad request becomes a problem response, never a 500."""

from __future__ import annotations

from typing import Any

import flask
import pytest
from pydantic import BaseModel, Field

from tests.conftest import AppUser, Stack
from whatschat.api import Call, Reply, Router
from whatschat.problems import CODES, Problem


class Echo(BaseModel):
    name: str = Field(min_length=1, max_length=10)
    count: int = 1


router = Router("echo")


@router.route("POST", "/v1/echo/{item_id:int}", body=Echo, auth=False, status=201)
def echo(call: Call[Echo, Any]) -> Reply:
    return Reply({"id": call.path["item_id"], "name": call.body.name}, 201)


@router.route("GET", "/v1/private", auth=True)
def private(call: Call[Any, Any]) -> Reply:
    return Reply({"user_id": call.user_id})


@router.route("GET", "/v1/boom", auth=False)
def boom(call: Call[Any, Any]) -> Reply:
    raise RuntimeError("bug")


@router.route("GET", "/v1/limited", auth=False)
def limited(call: Call[Any, Any]) -> Reply:
    raise Problem("rate-limited", retry_after=7)


@pytest.fixture
def client(stack: Stack) -> Any:
    app = flask.Flask("echo")
    app.add_url_rule(
        "/<path:path>",
        "all",
        lambda path: router.handle(flask.request),
        methods=["GET", "POST", "PUT"],
    )
    return app.test_client()


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["code"] == code and body["status"] == status and body["type"] == f"/problems/{code}"
    return body


def test_happy_path(client: Any) -> None:
    response = client.post("/v1/echo/12", json={"name": "ann"})
    assert response.status_code == 201
    assert response.get_json() == {"id": 12, "name": "ann"}


def test_malformed_json(client: Any) -> None:
    response = client.post("/v1/echo/1", data=b"{nope", content_type="application/json")
    _problem(response, 400, "malformed-request")


def test_wrong_content_type(client: Any) -> None:
    _problem(client.post("/v1/echo/1", data="name=a"), 415, "unsupported-media-type")


def test_oversized_body(client: Any) -> None:
    big = b'{"name": "' + b"a" * 70_000 + b'"}'
    _problem(
        client.post("/v1/echo/1", data=big, content_type="application/json"),
        413,
        "payload-too-large",
    )


def test_validation_lists_each_field(client: Any) -> None:
    body = _problem(
        client.post("/v1/echo/1", json={"name": "", "count": "x"}), 422, "validation-failed"
    )
    assert {e["field"] for e in body["errors"]} == {"name", "count"}


def test_non_object_body(client: Any) -> None:
    _problem(client.post("/v1/echo/1", json=[1, 2]), 422, "validation-failed")


def test_unknown_path_and_bad_param(client: Any) -> None:
    _problem(client.get("/v1/nothing"), 404, "not-found")
    _problem(client.post("/v1/echo/abc", json={"name": "a"}), 404, "not-found")


def test_wrong_method(client: Any) -> None:
    body = _problem(client.put("/v1/echo/1", json={"name": "a"}), 405, "method-not-allowed")
    assert body["allowed"] == ["POST"]


def test_auth_required(client: Any, make_user: Any) -> None:
    response = client.get("/v1/private")
    _problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _problem(
        client.get("/v1/private", headers={"Authorization": "Bearer x.y.z"}), 401, "unauthorized"
    )
    user: AppUser = make_user()
    ok = client.get("/v1/private", headers=user.auth)
    assert ok.status_code == 200 and ok.get_json() == {"user_id": user.id}


def test_unexpected_errors_are_500_problems_without_internals(client: Any) -> None:
    body = _problem(client.get("/v1/boom"), 500, "internal-error")
    assert "bug" not in str(body)


def test_retry_after_header(client: Any) -> None:
    response = client.get("/v1/limited")
    _problem(response, 429, "rate-limited")
    assert response.headers["Retry-After"] == "7"


def test_every_code_has_an_error_status_and_a_title() -> None:
    assert all(400 <= status < 600 and title for status, title in CODES.values())


@router.route("GET", "/v1/whoami", auth=False)
def whoami(call: Call[Any, Any]) -> Reply:
    return Reply({"address": call.client_address})


@pytest.mark.parametrize(
    ("hops", "forwarded", "expected"),
    [
        (0, "6.6.6.6", "127.0.0.1"),  # no proxy trusted: the header is ignored
        (1, "6.6.6.6, 10.0.0.7", "10.0.0.7"),  # the client's own entry is not trusted
        (2, "6.6.6.6, 10.0.0.7, 10.0.0.8", "10.0.0.7"),
        (1, "", "127.0.0.1"),
    ],
)
def test_client_address_trusts_only_our_proxies(
    client: Any, monkeypatch: pytest.MonkeyPatch, hops: int, forwarded: str, expected: str
) -> None:
    from whatschat.config import get_settings

    monkeypatch.setenv("TRUSTED_PROXY_HOPS", str(hops))
    get_settings.cache_clear()
    try:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        response = client.get(
            "/v1/whoami", headers=headers, environ_base={"REMOTE_ADDR": "127.0.0.1"}
        )
        assert response.get_json() == {"address": expected}
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_authenticated_operations_share_a_per_user_request_limit(
    client: Any, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from whatschat.config import get_settings

    monkeypatch.setenv("API_RATE_LIMIT", "3")
    monkeypatch.setenv("API_RATE_WINDOW_SECONDS", "60")
    get_settings.cache_clear()
    try:
        ann, bob = make_user(), make_user()
        responses = [client.get("/v1/private", headers=ann.auth) for _ in range(7)]
        statuses = [r.status_code for r in responses]
        # 3 per window: even if one window boundary falls inside this burst,
        # at most 6 of the 7 requests pass.
        assert statuses[0] == 200
        assert 429 in statuses, statuses
        assert statuses.count(200) <= 6
        limited = responses[statuses.index(429)]
        _problem(limited, 429, "rate-limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # Another user has a count of their own.
        assert client.get("/v1/private", headers=bob.auth).status_code == 200
        # Unauthenticated routes are not counted per user.
        assert client.post("/v1/echo/1", json={"name": "a"}).status_code == 201
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_without_a_redis_url_requests_are_served_as_with_redis_down(
    client: Any, make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unset REDIS_URL is Redis unavailable (the request limit fails open),
    # not a 500 on every authenticated request.
    from whatschat.config import get_settings
    from whatschat.storage import redis_client

    monkeypatch.setenv("REDIS_URL", "")
    get_settings.cache_clear()
    try:
        ann = make_user()
        response = client.get("/v1/private", headers=ann.auth)
        assert response.status_code == 200, response.data
        assert response.get_json() == {"user_id": ann.id}
        with pytest.raises(redis_client.RedisUnavailable, match="REDIS_URL"):
            redis_client.ping()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
