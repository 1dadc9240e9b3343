"""Smoke test of a running WhatsChat: register, log in, send, receive over the gateway.

Run by knative/kind/up.sh against the kind cluster; works against any
deployment, ``make dev`` included (its defaults are the addresses below):

    .venv/bin/python knative/kind/smoke.py --api http://127.0.0.1:8080 \
        --socket ws://127.0.0.1:8081/v1/socket

Two fresh users: alice registers, bob registers and logs in, alice opens a
direct conversation and sends a message, bob's socket (connected with the
conversation's position 0, so nothing can slip between subscribe and send)
must receive it. Prints each step; exit code 0 only if all passed. See
docs/deployment.md, "kind quickstart".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from websockets.sync.client import connect

PASSWORD = "smoke-test-password-" + uuid.uuid4().hex[:8]


class SmokeFailure(Exception):
    """A step did not answer as expected."""


def call(api: str, method: str, path: str, body: Any = None, token: str = "") -> Any:
    """One JSON request; returns the decoded body, raises SmokeFailure on 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{api}{path}", data=data, method=method)  # noqa: S310
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            raw = response.read()
    except urllib.error.HTTPError as error:
        with error:
            detail = error.read().decode(errors="replace")[:500]
        raise SmokeFailure(f"{method} {path}: {error.code} {detail}") from None
    return json.loads(raw) if raw else None


def step(name: str) -> None:
    print(f"  - {name}", flush=True)


def run(api: str, socket_url: str, timeout: float) -> None:
    suffix = uuid.uuid4().hex[:8]
    alice_name, bob_name = f"alice_{suffix}", f"bob_{suffix}"

    step("GET /healthz (every dependency answers)")
    health = call(api, "GET", "/healthz")
    if health.get("status") != "ok":
        raise SmokeFailure(f"/healthz: {health}")

    step(f"register {alice_name} and {bob_name}")
    registration = {"display_name": "Smoke Test", "password": PASSWORD}
    alice = call(api, "POST", "/v1/auth/register", {"username": alice_name, **registration})
    call(api, "POST", "/v1/auth/register", {"username": bob_name, **registration})

    step(f"log in as {bob_name}")
    credentials = {"username": bob_name, "password": PASSWORD, "device_name": "smoke"}
    bob = call(api, "POST", "/v1/auth/login", credentials)

    step("alice opens a direct conversation with bob")
    conversation = call(
        api, "POST", "/v1/conversations/direct", {"username": bob_name}, alice["access_token"]
    )
    conversation_id = conversation["id"]

    step("bob connects to the gateway")
    with connect(socket_url, open_timeout=timeout, close_timeout=5) as socket:
        hello = {"op": "hello", "v": 1, "token": bob["access_token"]}
        socket.send(json.dumps({**hello, "positions": {str(conversation_id): 0}}))
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if frame.get("op") == "ready":
                break
            if frame.get("op") == "error":
                raise SmokeFailure(f"gateway: {frame}")

        step("alice sends a message")
        text = f"hello bob {suffix}"
        sent = call(
            api,
            "POST",
            "/v1/messages",
            {"conversation_id": conversation_id, "client_msg_id": uuid.uuid4().hex, "text": text},
            alice["access_token"],
        )

        step("bob receives it over the gateway")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SmokeFailure(f"no message.created for seq {sent['seq']} in {timeout}s")
            frame = json.loads(socket.recv(timeout=remaining))
            if (
                frame.get("type") == "message.created"
                and frame.get("conversation_id") == conversation_id
                and frame.get("seq") == sent["seq"]
            ):
                return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--socket", default="ws://127.0.0.1:8081/v1/socket")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per wait")
    args = parser.parse_args(argv)
    print(f"smoke test of {args.api} and {args.socket}", flush=True)
    try:
        run(args.api.rstrip("/"), args.socket, args.timeout)
    except (SmokeFailure, OSError, TimeoutError) as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    print("smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
