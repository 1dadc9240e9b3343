"""Send throughput and latency through the HTTP send function, next to the floor.

Starts its own embedded PostgreSQL and Redis, serves every function with
``whatschat serve-api`` (the function server of every container, granian:
``--workers`` processes x ``--threads`` threads; default: send's deployed
configuration in knative/scaling.yaml) on a free port, then runs two phases
with the same number of concurrent clients:

- **function**: ``POST /v1/messages`` over keep-alive HTTP (token check,
  validation, rate limit, the send transaction, PUBLISH, outbox marked);
- **floor**: the same database and Redis work done by a minimal psycopg +
  redis script in this process: lock the conversation taking the next seq,
  INSERT the message, INSERT the outbox row, COMMIT, PUBLISH, mark the row
  (one autocommit UPDATE, as the function does).

Two layouts, both measured: each sender writes to a conversation of its own
(chat traffic spread over many conversations), and every sender writes to
one hot conversation (its row lock serializes the sends). It prints
messages/s and p50/p99 latency of both phases and their ratio.

Run: ``.venv/bin/python bench/send_bench.py [--messages 4000] [--clients 8]
[--workers N] [--threads N] [--rounds 2]``.
Figures are recorded in docs/messaging.md (benchmark).
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import shared  # noqa: E402

from knative.render import load_scaling  # noqa: E402
from whatschat import events, tokens  # noqa: E402


def run_clients(
    clients: int, per_client: int, make_sender: Callable[[int], Callable[[int], None]]
) -> tuple[list[float], float]:
    """``clients`` threads each calling their sender ``per_client`` times;
    all latencies (seconds) and the wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    failures: list[BaseException] = []

    def client(index: int) -> None:
        send = make_sender(index)
        mine: list[float] = []
        barrier.wait()
        try:
            for n in range(per_client):
                started = time.perf_counter()
                send(n)
                mine.append(time.perf_counter() - started)
        except BaseException as exc:  # reported after the run
            failures.append(exc)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} clients failed, first: {failures[0]!r}")
    return latencies, wall


class _KeepAliveClient:
    """A minimal HTTP/1.1 keep-alive client for the load generator.

    http.client parses every response with the email package: at hundreds of
    requests per second that is CPU the load generator takes from the server
    it measures on a 2-core machine. This one sends prebuilt bytes and reads
    the status line and Content-Length only.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""  # bytes received past the previous response

    def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        """Send ``head`` (request line and headers, without Content-Length) and ``body``."""
        self.sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        buffer = self.pending
        while b"\r\n\r\n" not in buffer:
            buffer += self._recv()
        header, _, rest = buffer.partition(b"\r\n\r\n")
        status = int(header[9:12])
        found = _CONTENT_LENGTH.search(header)
        length = int(found.group(1)) if found else 0
        while len(rest) < length:
            rest += self._recv()
        self.pending = rest[length:]
        return status, rest[:length]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        return chunk


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def _request_head(token: str | None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
    ).encode()


def http_sender(
    port: int, token: str, conversations: list[int], tag: str
) -> Callable[[int], Callable[[int], None]]:
    def make(index: int) -> Callable[[int], None]:
        conversation_id = conversations[index % len(conversations)]
        connection = _KeepAliveClient(port)
        head = _request_head(token)

        def send(n: int) -> None:
            body = orjson.dumps(
                {
                    "conversation_id": conversation_id,
                    "client_msg_id": f"{tag}-{index}-{n}",
                    "text": "benchmark message",
                }
            )
            status, answer = connection.post(head, body)
            if status != 201:
                raise RuntimeError(f"send answered {status}: {answer!r}")

        return send

    return make


def rejected_sender(port: int, token: str | None) -> Callable[[int], Callable[[int], None]]:
    """POST /v1/messages answered with a problem before any database work."""

    def make(index: int) -> Callable[[int], None]:
        connection = _KeepAliveClient(port)
        head = _request_head(token)

        def send(n: int) -> None:
            status, _ = connection.post(head, b"{}")
            if status not in (401, 422):
                raise RuntimeError(f"expected a problem, got {status}")

        return send

    return make


def _floor_sender(
    database_url: str, redis_url: str, user_id: int, conversations: list[int], tag: str
) -> Callable[[int], Callable[[int], None]]:
    """The same work as a send, with nothing else: the floor."""
    publisher = redis.Redis.from_url(redis_url)

    def make(index: int) -> Callable[[int], None]:
        conversation_id = conversations[index % len(conversations)]
        channel = events.conversation_channel(conversation_id)
        # Autocommit outside the explicit transaction, so the mark is one
        # round trip, as the function's.
        conn = psycopg.connect(database_url, autocommit=True)

        def send(n: int) -> None:
            with conn.transaction():
                (seq,) = conn.execute(  # type: ignore[misc]
                    "UPDATE conversations SET last_seq = last_seq + 1, updated_at = now()"
                    " WHERE id = %s RETURNING last_seq",
                    (conversation_id,),
                ).fetchone()
                (message_id, created_at) = conn.execute(  # type: ignore[misc]
                    "INSERT INTO messages (conversation_id, seq, sender_id, client_msg_id, kind,"
                    " body) VALUES (%s, %s, %s, %s, 'text', %s) RETURNING id, created_at",
                    (conversation_id, seq, user_id, f"{tag}-{index}-{n}", "benchmark message"),
                ).fetchone()
                message = {
                    "id": message_id,
                    "seq": seq,
                    "text": "benchmark message",
                    "created_at": created_at.isoformat(),
                }
                payload = orjson.dumps(
                    {
                        "v": 1, "id": uuid.uuid4().hex, "type": "message.created",
                        "ts": int(time.time() * 1000), "conversation_id": conversation_id,
                        "seq": seq, "user_id": None, "data": {"message": message},
                    }
                )  # fmt: skip
                (outbox_id,) = conn.execute(  # type: ignore[misc]
                    "INSERT INTO outbox (channel, payload) VALUES (%s, %s) RETURNING id",
                    (channel, payload),
                ).fetchone()
            publisher.publish(channel, payload)
            conn.execute("UPDATE outbox SET published_at = now() WHERE id = %s", (outbox_id,))

        return send

    return make


def seed(db: psycopg.Connection[Any], groups: dict[str, int]) -> tuple[int, dict[str, list[int]]]:
    """Two users (bench_a sends) and, per group name, that many direct
    conversations of theirs; bench_a's id and each group's conversation ids."""
    ids = [
        db.execute(
            "INSERT INTO users (username, display_name, password_hash)"
            " VALUES (%s, %s, 'x') RETURNING id",
            (name, name),
        ).fetchone()[0]  # type: ignore[index]
        for name in ("bench_a", "bench_b")
    ]
    created: dict[str, list[int]] = {}
    for group, count in groups.items():
        created[group] = []
        for n in range(count):
            (cid,) = db.execute(  # type: ignore[misc]
                "INSERT INTO conversations (kind, direct_key) VALUES ('direct', %s) RETURNING id",
                (f"{ids[0]}:{ids[1]}:{group}:{n}",),
            ).fetchone()
            for user in ids:
                db.execute(
                    "INSERT INTO members (conversation_id, user_id) VALUES (%s, %s)", (cid, user)
                )
            created[group].append(cid)
    return ids[0], created


def _line(name: str, latencies: list[float], wall: float) -> float:
    rate = len(latencies) / wall
    p50, p99 = (shared.percentile(latencies, q) * 1e3 for q in (0.5, 0.99))
    print(
        f"{name:<10} {len(latencies):>7} {rate:>10.0f} {p50:>9.2f} {p99:>9.2f}"
        f" {statistics.mean(latencies) * 1e3:>9.2f}"
    )
    return rate


def main() -> int:
    deployed = load_scaling()["send"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=4000, help="messages per phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent senders")
    parser.add_argument(
        "--threads",
        type=int,
        default=deployed.threads,
        help="server threads per process (default: send's in knative/scaling.yaml)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=deployed.workers,
        help="server processes (default: send's in knative/scaling.yaml)",
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both phases")
    args = parser.parse_args()
    per_client = args.messages // args.clients

    print(shared.machine_line())
    with shared.running(
        "send-bench-",
        SEND_RATE_LIMIT="100000000",  # measure cost, not throttling
        DATABASE_POOL_MAX_SIZE=str(max(deployed.database_pool, args.threads)),
        LOG_LEVEL="WARNING",
    ) as running:
        database_url, redis_url = running.env["DATABASE_URL"], running.env["REDIS_URL"]
        with psycopg.connect(database_url, autocommit=True) as db:
            # Per layout and phase, its own conversations: "spread" has
            # one per sender, "hot" a single one.
            user_id, created = seed(
                db,
                {
                    f"{layout}:{phase}": count
                    for layout, count in (("spread", args.clients), ("hot", 1))
                    for phase in ("function", "floor")
                },
            )
        layouts = {
            layout: {phase: created[f"{layout}:{phase}"] for phase in ("function", "floor")}
            for layout in ("spread", "hot")
        }
        token, _ = tokens.issue_access_token(user_id, "bench_a")
        with shared.serving(
            [sys.executable, "-m", "whatschat.cli", "serve-api", "--host", "127.0.0.1",
             "--threads", str(args.threads), "--workers", str(args.workers)]
        ) as port:  # fmt: skip

            def function_phase(where: list[int], count: int, tag: str) -> tuple[list[float], float]:
                return run_clients(args.clients, count, http_sender(port, token, where, tag))

            def floor_phase(where: list[int], count: int, tag: str) -> tuple[list[float], float]:
                sender = _floor_sender(database_url, redis_url, user_id, where, f"f{tag}")
                return run_clients(args.clients, count, sender)

            # Warm up both paths (function loading, pools, prepared statements).
            function_phase(layouts["spread"]["function"], 20, "warm")
            floor_phase(layouts["spread"]["floor"], 20, "warm")

            print(
                f"{args.messages} messages per phase, {args.clients} concurrent senders,"
                f" server: {args.workers} process(es) x {args.threads} threads"
            )
            print("\nthe HTTP stack alone (no database work)")
            print(f"{'request':<10} {'reqs':>7} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}", end="")
            print(f" {'mean ms':>9}")
            for name, auth in (("401", None), ("422+token", token)):
                run_clients(args.clients, 20, rejected_sender(port, auth))
                _line(name, *run_clients(args.clients, per_client, rejected_sender(port, auth)))
            for layout, where in layouts.items():
                described = (
                    "one conversation per sender" if layout == "spread" else "one hot conversation"
                )
                print(f"\n{layout}: {described}")
                print(
                    f"{'phase':<10} {'msgs':>7} {'msg/s':>10} {'p50 ms':>9} {'p99 ms':>9}", end=""
                )
                print(f" {'mean ms':>9}")
                ratios = []
                for round_ in range(args.rounds):
                    tag = f"{layout}{round_}"
                    # Alternate which phase goes first, so a drift of the
                    # machine (or of PostgreSQL's background work) within a
                    # round does not always favour the same phase.
                    phases = {"function": function_phase, "floor": floor_phase}
                    order = ["function", "floor"] if round_ % 2 == 0 else ["floor", "function"]
                    rates = {
                        name: _line(name, *phases[name](where[name], per_client, tag))
                        for name in order
                    }
                    function_rate, floor_rate = rates["function"], rates["floor"]
                    ratios.append(function_rate / floor_rate)
                    print(f"{'ratio':<10} {'':>7} {function_rate / floor_rate:>10.2f}")
                median = statistics.median(ratios)
                print(f"{layout}: median ratio function/floor {median:.2f}")
            print(f"({datetime.now(UTC):%Y-%m-%d})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
