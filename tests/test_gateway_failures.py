"""The gateway under faults and load: instance killed, Redis restarted, drains, slow
consumers, random disconnects; presence and typing across instances.

Real gateway processes, real PostgreSQL and Redis (a dedicated Redis where a
test restarts it). Every test checks that each client ends with exactly the
seqs 1..N of each of its conversations.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import AppUser, Stack
from tests.gateway_fixtures import (
    Client,
    GatewayProcess,
    Sender,
    create_conversation,
    run_all,
    stack_env,
    stop_all,
    wait_until,
)
from whatschat import embedded

pytestmark = pytest.mark.slow

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(stack: Stack, tmp_path: Path) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(env: dict[str, str] | None = None, **settings: str) -> GatewayProcess:
        gateway = GatewayProcess(env or stack_env(), tmp_path, **settings).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def last_seqs(db: psycopg.Connection[Any], conversation_ids: list[int]) -> dict[int, int]:
    rows = db.execute(
        "SELECT id, last_seq FROM conversations WHERE id = ANY(%s)", (conversation_ids,)
    ).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


class Traffic:
    """Senders in threads, writing to conversations until stopped."""

    def __init__(self, database_url: str, redis_url: str, members: dict[int, list[int]]) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.members = members  # conversation -> member ids (senders)
        self.stopping = threading.Event()
        self.sent = 0
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def run(self, threads: int, total: int | None = None, seed: int = 0) -> None:
        def work(index: int) -> None:
            rng = random.Random(seed + index)
            sender = Sender(self.database_url, self.redis_url)
            try:
                while not self.stopping.is_set():
                    with self.lock:
                        if total is not None and self.sent >= total:
                            return
                        self.sent += 1
                    cid = rng.choice(list(self.members))
                    sender.send(cid, rng.choice(self.members[cid]), f"m{self.sent}")
                    self.stopping.wait(0.003)  # a chat's pace, not a bulk load
            finally:
                sender.close()

        started = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads)]
        for thread in started:
            thread.start()
        self.threads += started

    async def join(self) -> None:
        """Wait until every sender has finished."""
        for thread in self.threads:
            await asyncio.to_thread(thread.join)

    async def stop(self) -> None:
        """Stop the senders (each finishes the send it is in) and wait for them."""
        self.stopping.set()
        await self.join()


async def settle(
    clients: list[tuple[Client, set[int]]], expected: dict[int, int], timeout: float
) -> None:
    def done() -> bool:
        return all(len(c.seqs.get(cid, [])) >= expected[cid] for c, cids in clients for cid in cids)

    try:
        await wait_until(done, timeout, "every client to hold every seq")
    finally:
        await asyncio.sleep(0.3)  # duplicates, if any, would arrive now
        for c, cids in clients:
            c.assert_complete({cid: expected[cid] for cid in cids})


def test_kill_9_of_an_instance_its_clients_resume_on_the_other_and_miss_nothing(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    a, b = start_gateway(), start_gateway()
    users = [make_user() for _ in range(6)]
    group = create_conversation(clean_db, [u.id for u in users])
    traffic = Traffic(stack.database_url, stack.redis_url, {group: [u.id for u in users]})

    async def scenario() -> None:
        clients = [
            Client(u.token, [a.url, b.url] if i % 2 else [b.url, a.url])
            for i, u in enumerate(users)
        ]
        runs = await run_all(clients)
        traffic.run(3)
        await asyncio.sleep(0.5)
        a.kill()  # no goodbye: its sockets just die
        await asyncio.sleep(1.0)
        await traffic.stop()
        expected = last_seqs(clean_db, [group])
        assert expected[group] > 20
        await settle([(c, {group}) for c in clients], expected, 30)
        assert all(c.connections >= 2 for i, c in enumerate(clients) if i % 2)
        await stop_all(clients, runs)

    asyncio.run(scenario())


def test_redis_restarted_mid_stream_no_client_has_a_gap(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
    tmp_path: Path,
) -> None:
    redis_server = embedded.EmbeddedRedis(tmp_path / "redis")
    redis_server.start()
    env = {**stack_env(), "REDIS_URL": redis_server.url}
    gateways = [
        start_gateway(env, GATEWAY_PUBSUB_PING_SECONDS="1", GATEWAY_REPLAY_MAX_MESSAGES="5000"),
        start_gateway(env, GATEWAY_PUBSUB_PING_SECONDS="1", GATEWAY_REPLAY_MAX_MESSAGES="5000"),
    ]
    users = [make_user() for _ in range(4)]
    convs = [create_conversation(clean_db, [u.id for u in users]) for _ in range(3)]
    traffic = Traffic(stack.database_url, redis_server.url, {c: [users[0].id] for c in convs})
    try:

        async def scenario() -> None:
            clients = [Client(u.token, [gateways[i % 2].url]) for i, u in enumerate(users)]
            runs = await run_all(clients)
            traffic.run(2)
            await asyncio.sleep(0.5)
            redis_server.stop()  # every Pub/Sub connection breaks; sends keep committing
            await asyncio.sleep(1.5)
            redis_server.start()
            await asyncio.sleep(1.5)
            await traffic.stop()
            expected = last_seqs(clean_db, convs)
            await settle([(c, set(convs)) for c in clients], expected, 30)
            assert all(c.connections == 1 for c in clients)  # repaired in place
            assert all(any(f["op"] == "resumed" for f in c.control) for c in clients)
            await stop_all(clients, runs)

        asyncio.run(scenario())
        for gw in gateways:
            _, body = gw.http("/metrics")
            assert b"whatschat_gateway_pubsub_breaks_total 1.0" in body
    finally:
        redis_server.stop()


def test_redis_dropping_the_subscriber_loses_nothing(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    """What Redis does to a subscriber whose output buffer passed its limit:
    it closes the connection, dropping what was buffered."""
    import redis

    gw = start_gateway(GATEWAY_REPLAY_MAX_MESSAGES="5000")
    users = [make_user() for _ in range(3)]
    group = create_conversation(clean_db, [u.id for u in users])
    traffic = Traffic(stack.database_url, stack.redis_url, {group: [users[0].id]})
    admin = redis.Redis.from_url(stack.redis_url)

    async def scenario() -> None:
        clients = [Client(u.token, [gw.url]) for u in users]
        runs = await run_all(clients)
        traffic.run(2)
        await asyncio.sleep(0.3)
        for _ in range(3):
            assert admin.client_kill_filter(_type="pubsub") >= 1
            await asyncio.sleep(0.4)
        await traffic.stop()
        await settle([(c, {group}) for c in clients], last_seqs(clean_db, [group]), 30)
        assert all(c.connections == 1 for c in clients)
        await stop_all(clients, runs)

    try:
        asyncio.run(scenario())
    finally:
        admin.close()
    _, body = gw.http("/metrics")
    assert b"whatschat_gateway_pubsub_breaks_total 3.0" in body


def test_1000_messages_over_20_conversations_with_random_disconnects(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    rng = random.Random(5)
    gateways = [start_gateway(), start_gateway()]
    users = [make_user() for _ in range(10)]
    members = {}
    for _ in range(20):
        chosen = rng.sample(users, rng.randint(2, 6))
        members[create_conversation(clean_db, [u.id for u in chosen])] = [u.id for u in chosen]
    traffic = Traffic(stack.database_url, stack.redis_url, members)

    async def scenario() -> None:
        clients: list[tuple[Client, set[int]]] = []
        for i, user in enumerate(users):
            mine = {cid for cid, ids in members.items() if user.id in ids}
            for device in range(1 + i % 2):  # some users have two devices
                urls = [gateways[(i + device) % 2].url, gateways[(i + device + 1) % 2].url]
                clients.append((Client(user.token, urls), mine))
        runs = await run_all([c for c, _ in clients])
        traffic.run(4, total=1000, seed=11)
        while any(t.is_alive() for t in traffic.threads):
            await asyncio.sleep(rng.uniform(0.02, 0.15))
            victim, _ = rng.choice(clients)
            await victim.drop()  # the network goes away under it
        await traffic.join()
        expected = last_seqs(clean_db, list(members))
        assert sum(expected.values()) == 1000
        await settle(clients, expected, 60)
        assert sum(c.connections for c, _ in clients) > len(clients) + 5
        await stop_all([c for c, _ in clients], runs)

    asyncio.run(scenario())


def test_slow_consumer_is_cut_off_while_fast_ones_keep_receiving(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    gw = start_gateway(GATEWAY_SEND_BUFFER_BYTES="65536", GATEWAY_REPLAY_MAX_MESSAGES="1000")
    fast_user, slow_user, author = make_user(), make_user(), make_user()
    group = create_conversation(clean_db, [fast_user.id, slow_user.id, author.id])
    sender = Sender(stack.database_url, stack.redis_url)
    big = "x" * 30000

    async def scenario() -> None:
        fast = Client(fast_user.token, [gw.url])
        fast_run = asyncio.create_task(fast.run())
        # The slow client: a tiny receive buffer and it never reads.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gw.port))
        slow_ws = await connect(gw.url, sock=sock, max_queue=1, max_size=2**24)
        await slow_ws.send(orjson.dumps({"op": "hello", "token": slow_user.token}).decode())
        await asyncio.wait_for(fast.ready.wait(), 10)
        for i in range(200):
            await asyncio.to_thread(sender.send, group, author.id, f"{i} {big}")
        await wait_until(lambda: len(fast.seqs.get(group, [])) == 200, 30, "fast client")
        fast.assert_complete({group: 200})
        _, body = await asyncio.to_thread(gw.http, "/metrics")
        assert b'whatschat_gateway_drops_total{reason="slow_consumer"} 1.0' in body
        slow_ws.transport.abort()
        # The slow client comes back and resumes: it still gets everything.
        again = Client(slow_user.token, [gw.url])
        again.seqs[group] = []
        again_run = asyncio.create_task(again.run())
        await wait_until(lambda: len(again.seqs.get(group, [])) == 200, 30, "resumed slow client")
        again.assert_complete({group: 200})
        for c in (fast, again):
            await c.stop()
        await asyncio.gather(fast_run, again_run)

    try:
        asyncio.run(scenario())
    finally:
        sender.close()


def test_sigterm_drains_with_1012_and_clients_resume_elsewhere(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    a, b = start_gateway(), start_gateway()
    users = [make_user() for _ in range(4)]
    group = create_conversation(clean_db, [u.id for u in users])
    traffic = Traffic(stack.database_url, stack.redis_url, {group: [users[0].id]})

    async def scenario() -> None:
        clients = [Client(u.token, [a.url, b.url]) for u in users]
        runs = await run_all(clients)
        traffic.run(2)
        await asyncio.sleep(0.3)
        code = await asyncio.to_thread(a.terminate)
        assert code == 0
        await asyncio.sleep(0.5)
        await traffic.stop()
        await settle([(c, {group}) for c in clients], last_seqs(clean_db, [group]), 30)
        assert all(c.closes[0] == 1012 for c in clients)
        await stop_all(clients, runs)

    asyncio.run(scenario())


def test_presence_and_typing_reach_contacts_across_instances(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    settings = {"GATEWAY_PRESENCE_TTL_SECONDS": "3"}
    a, b = start_gateway(**settings), start_gateway(**settings)
    alice, bob, carol = make_user(), make_user(), make_user()
    pair = create_conversation(clean_db, [alice.id, bob.id], kind="direct")
    group = create_conversation(clean_db, [alice.id, bob.id, carol.id])

    async def scenario() -> None:
        bob_client = Client(bob.token, [b.url])
        carol_client = Client(carol.token, [b.url])
        runs = await run_all((bob_client, carol_client), timeout=10)

        def presence_of(c: Client, online: bool) -> list[dict[str, Any]]:
            return [
                f
                for f in c.control
                if f["op"] == "presence" and f["user_id"] == alice.id and f["online"] is online
            ]

        alice_client = Client(alice.token, [a.url])
        alice_ws, alice_reader = await alice_client.open_ready(a.url)
        await wait_until(lambda: presence_of(bob_client, True), 10, "alice online at bob")
        await alice_ws.send(orjson.dumps({"op": "typing", "conversation_id": group}).decode())
        await alice_ws.send(orjson.dumps({"op": "typing", "conversation_id": group}).decode())

        def typing(c: Client) -> list[dict[str, Any]]:
            return [e for e in c.events if e["type"] == "typing"]

        await wait_until(lambda: typing(bob_client) and typing(carol_client), 10, "typing")
        await asyncio.sleep(0.3)
        assert len(typing(bob_client)) == 1  # the second one was inside the rate limit
        assert typing(bob_client)[0]["data"] == {"user_id": alice.id, "typing": True}
        assert typing(bob_client)[0]["seq"] is None
        assert not presence_of(carol_client, True)  # presence is for direct contacts only

        await asyncio.sleep(4)  # past the 3 s TTL: only heartbeats keep alice online
        await bob_client.ws.send('{"op":"presence.query"}')  # type: ignore[union-attr]
        await wait_until(
            lambda: any(f["op"] == "presence.state" for f in bob_client.control), 10, "state"
        )
        state = next(f for f in bob_client.control if f["op"] == "presence.state")
        assert state["users"] == [{"user_id": alice.id, "online": True, "last_seen": None}]

        await alice_ws.close()
        await alice_reader
        await wait_until(lambda: presence_of(bob_client, False), 10, "alice offline at bob")
        assert presence_of(bob_client, False)[0]["last_seen"] > 0

        # Alice again, on an instance that then dies without a word: her
        # presence expires and another instance says she is offline.
        alice2 = Client(alice.token, [a.url])
        alice2_run = asyncio.create_task(alice2.run())
        await asyncio.wait_for(alice2.ready.wait(), 10)
        await wait_until(lambda: len(presence_of(bob_client, True)) == 2, 10, "online again")
        alice2.stopping = True
        a.kill()
        await wait_until(lambda: len(presence_of(bob_client, False)) == 2, 20, "reaped")
        await alice2_run
        ready = next(f for f in bob_client.control if f["op"] == "ready")
        assert ready["conversations"][str(pair)]["kind"] == "direct"
        for c in (bob_client, carol_client):
            await c.stop()
        await asyncio.gather(*runs)

    asyncio.run(scenario())


def test_health_readiness_and_metrics(
    clean_db: psycopg.Connection[Any], start_gateway: StartGateway
) -> None:
    gw = start_gateway()
    assert gw.http("/healthz") == (200, b"ok\n")

    async def ready() -> None:
        await wait_until(lambda: gw.http("/readyz")[0] == 200, 15, "ready")

    asyncio.run(ready())
    status, body = gw.http("/readyz")
    assert orjson.loads(body) == {"ready": True, "problems": []}
    status, body = gw.http("/metrics")
    assert status == 200
    for name in (
        b"whatschat_gateway_connections",
        b"whatschat_gateway_deliveries_total",
        b"whatschat_gateway_drops_total",
        b"whatschat_gateway_resumes_total",
        b"whatschat_gateway_delivery_latency_seconds_bucket",
    ):
        assert name in body
    assert gw.http("/nope")[0] == 404
