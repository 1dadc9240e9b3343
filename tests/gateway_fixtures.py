"""Helpers for the gateway tests: gateway processes, a resuming client, message writes.

Gateways run as real processes (``python -m whatschat.cli gateway``) on
free ports, against the session's embedded PostgreSQL and Redis (or a
dedicated Redis). Messages are written the way the send path writes them
(lock the conversation, next seq, insert, commit, then PUBLISH the envelope).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis
from psycopg.rows import dict_row
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from whatschat import embedded
from whatschat.events import Event
from whatschat.schemas import message_view
from whatschat.storage.messages import MESSAGE_COLUMNS

ROOT = Path(__file__).resolve().parent.parent


class GatewayProcess:
    """One gateway instance as a child process."""

    def __init__(self, env: dict[str, str], log_dir: Path, **settings: str) -> None:
        self.port = embedded.free_port()
        self.http_port = embedded.free_port()
        self.env = {
            **env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_HTTP_PORT": str(self.http_port),
            "GATEWAY_DRAIN_SECONDS": "3",
            "LOG_LEVEL": "WARNING",
            **settings,
        }
        self.log_path = log_dir / f"gateway-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/socket"

    def start(self) -> GatewayProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "whatschat.cli", "gateway"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        embedded.wait_for_port(self.port, 30, self.process)
        embedded.wait_for_port(self.http_port, 30, self.process)
        return self

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}{path}", timeout=10
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        embedded.stop_process(self.process, signal.SIGTERM, 10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- writing chat data as the functions do -------------------------------------


def create_conversation(
    db: psycopg.Connection[Any], member_ids: list[int], kind: str = "group"
) -> int:
    direct_key = None
    if kind == "direct":
        low, high = sorted(member_ids)
        direct_key = f"{low}:{high}"
    row = db.execute(
        "INSERT INTO conversations (kind, title, direct_key) VALUES (%s, %s, %s) RETURNING id",
        (kind, "test group" if kind == "group" else None, direct_key),
    ).fetchone()
    assert row is not None
    for user_id in member_ids:
        db.execute(
            "INSERT INTO members (conversation_id, user_id) VALUES (%s, %s)", (row[0], user_id)
        )
    return int(row[0])


class Sender:
    """Writes messages like the send path: one transaction, then PUBLISH after commit."""

    def __init__(self, database_url: str, redis_url: str) -> None:
        self.conn = psycopg.connect(database_url, row_factory=dict_row, autocommit=True)
        self.redis = redis.Redis.from_url(redis_url)

    def send(self, conversation_id: int, sender_id: int, text: str, *, publish: bool = True) -> int:
        with self.conn.transaction():
            got = self.conn.execute(
                "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq",
                (conversation_id,),
            ).fetchone()
            assert got is not None
            seq = int(got["last_seq"])
            self.conn.execute(
                "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind, body)"
                " VALUES (%s, %s, %s, %s, 'text', %s)",
                (conversation_id, seq, sender_id, uuid.uuid4().hex, text),
            )
        row = self.conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages m"  # noqa: S608 - constant columns
            " LEFT JOIN attachments a ON a.id = m.attachment_id"
            " WHERE m.conversation_id = %s AND m.seq = %s",
            (conversation_id, seq),
        ).fetchone()
        assert row is not None
        event = Event(
            "message.created",
            {"message": message_view(row).model_dump(mode="json")},
            conversation_id=conversation_id,
            seq=seq,
        )
        if publish:
            with contextlib.suppress(redis.RedisError):
                self.redis.publish(event.channel, event.encode())
        return seq

    def publish(self, event: Event) -> None:
        self.redis.publish(event.channel, event.encode())

    def close(self) -> None:
        self.conn.close()
        self.redis.close()


async def run_all(clients: Iterable[Client], timeout: float = 15) -> list[asyncio.Task[None]]:
    """Start ``Client.run`` for each client and wait until every one is ready."""
    clients = list(clients)
    runs = [asyncio.create_task(client.run()) for client in clients]
    for client in clients:
        await asyncio.wait_for(client.ready.wait(), timeout)
    return runs


async def stop_all(clients: Iterable[Client], runs: list[asyncio.Task[None]]) -> None:
    """Stop clients started with ``Client.run`` and wait for their tasks."""
    for client in clients:
        await client.stop()
    await asyncio.gather(*runs)


# --- a client that resumes ------------------------------------------------------


@dataclass
class Client:
    """A test client: one socket at a time, resuming with the positions it holds."""

    token: str
    urls: list[str]
    seqs: dict[int, list[int]] = field(default_factory=dict)  # every seq received, in order
    control: list[dict[str, Any]] = field(default_factory=list)  # every op frame
    events: list[dict[str, Any]] = field(default_factory=list)  # every event frame
    closes: list[int | None] = field(default_factory=list)  # close codes seen
    ws: ClientConnection | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0
    stopping: bool = False

    def positions(self) -> dict[str, int]:
        return {str(cid): seqs[-1] for cid, seqs in self.seqs.items() if seqs}

    async def open(self, url: str, *, resume: bool = True) -> ClientConnection:
        self.ready.clear()
        ws = await connect(url, max_size=2**24, open_timeout=10)
        hello: dict[str, Any] = {"op": "hello", "token": self.token}
        if resume:
            hello["positions"] = self.positions()
        await ws.send(orjson.dumps(hello).decode())
        self.ws = ws
        self.connections += 1
        return ws

    async def open_ready(
        self, url: str, *, resume: bool = True
    ) -> tuple[ClientConnection, asyncio.Task[None]]:
        """Open a socket, start reading it, and wait for its ready frame."""
        ws = await self.open(url, resume=resume)
        reader = asyncio.create_task(self.read(ws))
        await asyncio.wait_for(self.ready.wait(), 10)
        return ws, reader

    def take(self, raw: str | bytes) -> None:
        doc = orjson.loads(raw)
        if "op" in doc:
            self.control.append(doc)
            if doc["op"] == "ready":
                self.ready.set()
            elif doc["op"] == "catch_up":
                raise AssertionError(f"unexpected catch_up {doc}")
            return
        self.events.append(doc)
        if doc["seq"] is not None:  # any event with a seq carries the message it created
            self.seqs.setdefault(doc["conversation_id"], []).append(doc["seq"])

    async def read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self.take(raw)
        except ConnectionClosed:
            pass
        self.closes.append(ws.close_code)

    async def run(self, *, resume: bool = True) -> None:
        """Stay connected (to the first URL that answers) until stop()."""
        index = 0
        while not self.stopping:
            try:
                ws = await self.open(self.urls[index % len(self.urls)], resume=resume)
            except (OSError, TimeoutError, ConnectionClosed):
                index += 1
                await asyncio.sleep(0.05)
                continue
            if self.stopping:
                await ws.close()
                break
            await self.read(ws)
            if not self.stopping:
                await asyncio.sleep(0.02)
                if ws.close_code in (None, 1006, 1012, 1011):
                    index += 1  # that instance went away: try the next

    async def drop(self) -> None:
        """Break the socket abruptly (a network drop), as seen by the server."""
        if self.ws is not None and self.ws.transport is not None:
            self.ws.transport.abort()

    async def stop(self) -> None:
        self.stopping = True
        if self.ws is not None:
            await self.ws.close()

    def assert_complete(self, expected: dict[int, int]) -> None:
        """Each conversation's seqs are exactly 1..N, each once, in order."""
        for cid, last in expected.items():
            got = self.seqs.get(cid, [])
            assert got == list(range(1, last + 1)), (
                f"conversation {cid}: {len(got)} seqs, expected 1..{last}; "
                f"first differences: {_diff(got, last)}"
            )


def _diff(got: list[int], last: int) -> str:
    missing = sorted(set(range(1, last + 1)) - set(got))[:10]
    dups = sorted({s for s in got if got.count(s) > 1})[:10]
    order = next((i for i in range(1, len(got)) if got[i] <= got[i - 1]), None)
    return f"missing {missing}, duplicated {dups}, out of order at {order}"


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def stack_env() -> dict[str, str]:
    return dict(os.environ)
