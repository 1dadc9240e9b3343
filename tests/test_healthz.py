"""GET /healthz reports each dependency; 200 only when all are ok."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Stack
from whatschat import embedded
from whatschat.config import get_settings


def test_all_dependencies_ok(function_client: Any) -> None:
    response = function_client("healthz").get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "dependencies": {"postgres": "ok", "redis": "ok", "s3": "ok"},
    }


@pytest.fixture
def s3_unreachable(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{embedded.free_port()}")
    monkeypatch.setenv("S3_TIMEOUT_SECONDS", "1")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_failing_dependency_gives_503(function_client: Any, s3_unreachable: None) -> None:
    response = function_client("healthz").get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "failing"
    assert body["dependencies"]["postgres"] == "ok"
    assert body["dependencies"]["redis"] == "ok"
    assert body["dependencies"]["s3"].startswith("failing")
