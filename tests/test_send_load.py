"""8 threads x 200 sends into one conversation over real HTTP, with retries:
sequences are exactly 1..1600, no duplicates, every event published."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import AppUser, Stack
from tests.messaging_helpers import Chat
from whatschat import embedded, outbox

pytest_plugins = ["tests.messaging_fixtures"]

THREADS = 8
PER_THREAD = 200


@pytest.fixture
def api_server(stack: Stack) -> Iterator[int]:
    """``whatschat serve-api`` (the function server, every function) on a free port."""
    port = embedded.free_port()
    env = {**os.environ, "SEND_RATE_LIMIT": "1000000", "DATABASE_POOL_MAX_SIZE": "8"}
    process = subprocess.Popen(
        [sys.executable, "-m", "whatschat.cli", "serve-api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        embedded.wait_for_port(port, 60, process)
        yield port
    finally:
        process.terminate()
        process.wait(15)


def _post(conn: http.client.HTTPConnection, user: AppUser, body: dict[str, Any]) -> tuple[int, Any]:
    conn.request(
        "POST",
        "/v1/messages",
        body=json.dumps(body),
        headers={**user.auth, "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.slow
def test_concurrent_sends_get_gap_free_unique_seqs(
    chat: Chat,
    make_user: Callable[..., AppUser],
    api_server: int,
    db: psycopg.Connection[Any],
) -> None:
    alice, bob = make_user(), make_user()
    cid = chat.direct(alice, bob)  # a direct conversation has no creation message
    statuses: Counter[int] = Counter()
    seq_of: dict[str, set[int]] = {}
    failures: list[Any] = []
    lock = threading.Lock()
    barrier = threading.Barrier(THREADS)

    def sender(index: int) -> None:
        # Threads 0-3 send as alice, 4-7 as bob; odd threads also race their
        # even neighbour by sending some of its client_msg_ids (same sender).
        user = alice if index < THREADS // 2 else bob
        conn = http.client.HTTPConnection("127.0.0.1", api_server, timeout=30)
        barrier.wait()
        try:
            for n in range(PER_THREAD):
                attempts = [f"t{index}-{n}"]
                if n % 10 == 0:
                    attempts.append(f"t{index}-{n}")  # a plain retry
                if index % 2 and n % 25 == 0:
                    attempts.append(f"t{index - 1}-{n}")  # a racing retry of the neighbour's
                for client_msg_id in attempts:
                    status, body = _post(
                        conn,
                        user,
                        {"conversation_id": cid, "client_msg_id": client_msg_id, "text": "x"},
                    )
                    with lock:
                        statuses[status] += 1
                        if status in (200, 201):
                            seq_of.setdefault(f"{user.id}/{client_msg_id}", set()).add(body["seq"])
                        else:
                            failures.append((status, body))
        finally:
            conn.close()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert failures == []
    total = THREADS * PER_THREAD
    # Exactly one creation per client_msg_id; every retry answered 200 with the same seq.
    assert statuses[201] == total
    plain_retries = THREADS * (PER_THREAD // 10)
    racing_retries = (THREADS // 2) * (PER_THREAD // 25)
    assert statuses[200] == plain_retries + racing_retries
    assert len(seq_of) == total and all(len(seqs) == 1 for seqs in seq_of.values())
    rows = db.execute(
        "SELECT seq FROM messages WHERE conversation_id = %s ORDER BY seq", (cid,)
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, total + 1))
    assert sorted(next(iter(s)) for s in seq_of.values()) == list(range(1, total + 1))
    assert db.execute("SELECT last_seq FROM conversations WHERE id = %s", (cid,)).fetchone() == (
        total,
    )
    assert outbox.pending() == 0  # every send published its own event
