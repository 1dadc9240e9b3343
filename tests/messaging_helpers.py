"""Helpers of the messaging tests: a client that reaches every function by path
(with shortcuts to open conversations and send), a real Redis subscriber that
records every published event, and a problem-response check.

The fixtures building them are in tests/messaging_fixtures.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from functions.routes import find
from tests.conftest import AppUser
from whatschat import events


@dataclass
class Chat:
    """Calls any public function by path, through functions-framework's loading path."""

    make_client: Callable[[str], Any]
    clients: dict[str, Any] = field(default_factory=dict)

    def call(
        self,
        user: AppUser | None,
        method: str,
        path: str,
        json: Any = None,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        route = find(path)
        assert route is not None, f"no function serves {path}"
        client = self.clients.get(route.target)
        if client is None:
            client = self.clients[route.target] = self.make_client(route.target)
        all_headers = {**(user.auth if user else {}), **(headers or {})}
        return client.open(path, method=method, json=json, query_string=query, headers=all_headers)

    def ok(self, user: AppUser, method: str, path: str, json: Any = None, **kw: Any) -> Any:
        """Call and require a 2xx; return the JSON body."""
        response = self.call(user, method, path, json, **kw)
        assert 200 <= response.status_code < 300, (response.status_code, response.data)
        return response.get_json()

    def direct(self, a: AppUser, b: AppUser) -> int:
        """The direct conversation of a and b (opened by a)."""
        body = self.ok(a, "POST", "/v1/conversations/direct", {"username": b.username})
        return int(body["id"])

    def group(self, creator: AppUser, members: list[AppUser], title: str = "Team") -> int:
        body = self.ok(
            creator,
            "POST",
            "/v1/groups",
            {"title": title, "member_ids": [m.id for m in members]},
        )
        return int(body["id"])

    def send(
        self, user: AppUser, conversation_id: int, text: str = "hi", **extra: Any
    ) -> dict[str, Any]:
        body = {
            "conversation_id": conversation_id,
            "client_msg_id": extra.pop("client_msg_id", uuid.uuid4().hex),
            "text": text,
            **extra,
        }
        result: dict[str, Any] = self.ok(user, "POST", "/v1/messages", body)
        return result

    def history(self, user: AppUser, conversation_id: int, **query: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.ok(user, "GET", f"/v1/history/{conversation_id}", query=query)
        return result


class EventSink:
    """A real Redis subscriber to every WhatsChat channel, recording what arrives."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url)  # its own connection
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(f"{events.CHANNEL_PREFIX}*")
        self.received: list[tuple[str, events.Event]] = []  # (channel, event) in arrival order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # Wait for the subscription to be active before anything publishes.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = self._pubsub.get_message(timeout=0.1)
            if message is None and self._pubsub.subscribed:
                break
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.05)
            if message is None or message.get("type") != "pmessage":
                continue
            channel = message["channel"].decode()
            with self._lock:
                self.received.append((channel, events.decode(message["data"])))

    def events(self, type_: str | None = None) -> list[events.Event]:
        with self._lock:
            return [e for _, e in self.received if type_ is None or e.type == type_]

    def on(self, channel: str) -> list[events.Event]:
        with self._lock:
            return [e for c, e in self.received if c == channel]

    def wait_for(self, count: int, type_: str | None = None, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.events(type_)) >= count:
                return True
            time.sleep(0.02)
        return len(self.events(type_)) >= count

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()


def problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Assert a problem+json response with this status (and code)."""
    assert response.status_code == status, (response.status_code, response.data)
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.get_json(force=True)
    assert body["status"] == status
    if code is not None:
        assert body["code"] == code, body
    return body
