"""The gateway against real sockets, Redis and PostgreSQL: auth, protocol, delivery, resume.

Each test starts gateway processes (tests/gateway_fixtures.py) on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

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
from whatschat import tokens
from whatschat.events import Event

StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(stack: Stack, tmp_path: Path) -> Iterator[StartGateway]:
    started: list[GatewayProcess] = []

    def start(**settings: str) -> GatewayProcess:
        gateway = GatewayProcess(stack_env(), tmp_path, **settings).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def sender(stack: Stack) -> Iterator[Sender]:
    s = Sender(stack.database_url, stack.redis_url)
    yield s
    s.close()


async def close_code_after(url: str, *frames: str | bytes, wait: float = 10) -> int | None:
    async with connect(url, max_size=2**24) as ws:
        for frame in frames:
            await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), wait)
        return ws.close_code


def hello(token: str, positions: dict[str, int] | None = None) -> str:
    doc: dict[str, Any] = {"op": "hello", "token": token}
    if positions is not None:
        doc["positions"] = positions
    return orjson.dumps(doc).decode()


# --- handshake and protocol -------------------------------------------------------


def test_bad_tokens_and_missing_hello_close_with_documented_codes(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(GATEWAY_AUTH_TIMEOUT_SECONDS="1")
    user = make_user()
    other_key = tokens.generate_key_pair("other")
    forged = user.token[:-4] + ("AAAA" if not user.token.endswith("AAAA") else "BBBB")

    async def scenario() -> None:
        assert await close_code_after(gw.url, hello("not-a-jwt")) == 4001
        assert await close_code_after(gw.url, hello(forged)) == 4001
        assert other_key.key_id  # a token signed by an unknown key is refused too
        assert await close_code_after(gw.url) == 4002  # nothing sent within the deadline
        assert await close_code_after(gw.url, '{"op":"ping"}') == 4004
        assert await close_code_after(gw.url, "{{{") == 4004
        async with connect(gw.url.replace("/v1/socket", "/elsewhere")) as _ws:
            pass

    with pytest.raises(Exception, match="404"):
        asyncio.run(scenario())
    status, body = gw.http("/metrics")
    assert status == 200
    assert b"whatschat_gateway_auth_failures_total 5.0" in body


def test_expired_token_is_refused(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway()
    user = make_user()
    old, _ = tokens.issue_access_token(user.id, user.username, now=time.time() - 3600)
    assert asyncio.run(close_code_after(gw.url, hello(old))) == 4001


def test_malformed_and_unknown_frames_get_error_frames_and_oversized_frames_close(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(GATEWAY_MAX_FRAME_BYTES="2048")
    user = make_user()

    async def scenario() -> None:
        client = Client(user.token, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        for bad in ("nope", "[]", '{"op":"fly"}', '{"op":"typing","conversation_id":"x"}'):
            await ws.send(bad)
        await ws.send(b"\x00\x01")
        await ws.send('{"op":"typing","conversation_id":999999}')
        await ws.send('{"op":"ping","id":"p1"}')
        await wait_until(lambda: any(c["op"] == "pong" for c in client.control), 10, "pong")
        codes = [c["code"] for c in client.control if c["op"] == "error"]
        assert codes == [
            "bad_json",
            "bad_frame",
            "unknown_op",
            "bad_field",
            "binary_frame",
            "not_a_member",
        ]
        assert next(c for c in client.control if c["op"] == "pong")["id"] == "p1"
        for i in range(80):  # a flood: past 50 a second, frames are dropped
            await ws.send(orjson.dumps({"op": "ping", "id": i}).decode())
        await wait_until(
            lambda: any(c.get("code") == "rate_limited" for c in client.control), 10, "limit"
        )
        await asyncio.sleep(0.3)
        pongs = [c["id"] for c in client.control if c["op"] == "pong" and c["id"] != "p1"]
        assert 0 < len(pongs) < 80
        assert [c["code"] for c in client.control if c["op"] == "error"].count("rate_limited") == 1
        await asyncio.sleep(1.1)  # a new second, a new budget
        await ws.send('{"op":"ping","id":"again"}')
        await wait_until(lambda: client.control[-1].get("id") == "again", 10, "pong again")
        await ws.send("x" * 4096)  # above GATEWAY_MAX_FRAME_BYTES
        await asyncio.wait_for(reader, 10)
        assert client.closes == [1009]

    asyncio.run(scenario())
    assert gw.process is not None and gw.process.poll() is None  # never a crash


def test_connections_per_user_are_limited(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(GATEWAY_MAX_CONNECTIONS_PER_USER="2")
    user = make_user()

    async def scenario() -> None:
        clients = [Client(user.token, [gw.url]) for _ in range(2)]
        sockets = [await c.open(gw.url) for c in clients]
        readers = [asyncio.create_task(c.read(ws)) for c, ws in zip(clients, sockets, strict=True)]
        for c in clients:
            await asyncio.wait_for(c.ready.wait(), 10)
        assert await close_code_after(gw.url, hello(user.token)) == 4029
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*readers)

    asyncio.run(scenario())


def test_a_fresh_token_extends_the_session_and_expiry_closes_it(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway()
    user = make_user()
    # Tokens that expire in ~2 s (issued in the past; the verifier allows 5 s of leeway).
    ttl = 900
    short, _ = tokens.issue_access_token(user.id, user.username, now=time.time() - ttl - 3)
    other = make_user()

    async def scenario() -> None:
        client = Client(short, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        fresh, _ = tokens.issue_access_token(user.id, user.username)
        await ws.send(orjson.dumps({"op": "auth", "token": fresh}).decode())
        await wait_until(lambda: any(c["op"] == "authed" for c in client.control), 10, "authed")
        await asyncio.sleep(2.5)  # past the first token's expiry: still open
        assert not reader.done()
        await ws.send(orjson.dumps({"op": "auth", "token": other.token}).decode())
        await asyncio.wait_for(reader, 10)
        assert client.closes == [4001]  # a token of another user

        short2, _ = tokens.issue_access_token(user.id, user.username, now=time.time() - ttl - 3)
        client2 = Client(short2, [gw.url])
        ws2 = await client2.open(gw.url)
        await asyncio.wait_for(client2.read(ws2), 15)
        assert client2.closes == [4003]  # expired without a refresh

    asyncio.run(scenario())


def test_a_silent_socket_is_pinged_then_closed_and_an_answering_one_stays(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
) -> None:
    gw = start_gateway(GATEWAY_PING_INTERVAL_SECONDS="0.5", GATEWAY_PING_TIMEOUT_SECONDS="0.5")
    user = make_user()
    # A raw client that never answers pings.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(
            b"GET /v1/socket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 101")
        payload = hello(user.token).encode()
        # Masked with an all-zero key: the payload goes as it is.
        sock.sendall(b"\x81\xfe" + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload)
        stream = received.split(b"\r\n\r\n", 1)[1]
        with contextlib.suppress(ConnectionResetError):  # aborted after the close frame
            while chunk := sock.recv(65536):
                stream += chunk
    opcodes: list[int] = []
    close_code = None
    while stream:
        size, head = stream[1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(stream[2:4], "big"), 4
        opcodes.append(stream[0] & 0x0F)
        if opcodes[-1] == 8:
            close_code = int.from_bytes(stream[head : head + 2], "big")
        stream = stream[head + size :]
    assert 9 in opcodes  # pinged
    assert close_code == 1011  # then closed for not answering

    async def answering() -> None:
        client = Client(user.token, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        await asyncio.sleep(2.5)  # several ping intervals: the library answers each ping
        assert not reader.done()
        await ws.close()
        await reader

    asyncio.run(answering())


# --- delivery -----------------------------------------------------------------------


def test_every_message_reaches_every_socket_of_every_member_once_across_two_instances(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    sender: Sender,
) -> None:
    gateways = [start_gateway(), start_gateway()]
    users = [make_user() for _ in range(4)]
    outsider = make_user()
    group = create_conversation(clean_db, [u.id for u in users])
    pair = create_conversation(clean_db, [users[0].id, users[1].id], kind="direct")

    async def scenario() -> None:
        # Two devices per user, spread over both instances; the outsider too.
        clients = [
            Client(u.token, [gateways[(i + d) % 2].url])
            for i, u in enumerate(users)
            for d in (0, 1)
        ]
        spy = Client(outsider.token, [gateways[0].url])
        runs = await run_all([*clients, spy])
        for i in range(30):
            await asyncio.to_thread(sender.send, group, users[i % 4].id, f"hello {i}")
        for i in range(5):
            await asyncio.to_thread(sender.send, pair, users[0].id, f"psst {i}")
        await wait_until(
            lambda: all(len(c.seqs.get(group, [])) == 30 for c in clients), 20, "group messages"
        )
        await wait_until(
            lambda: all(len(c.seqs.get(pair, [])) == 5 for c in clients[:4]), 20, "direct"
        )
        await asyncio.sleep(0.3)  # anything extra would show now
        for c in clients:
            c.assert_complete({group: 30})
        for c in clients[:4]:
            c.assert_complete({pair: 5})
        for c in clients[4:]:
            assert pair not in c.seqs
        assert spy.seqs == {}
        await stop_all([*clients, spy], runs)

    asyncio.run(scenario())
    for gw in gateways:
        status, body = gw.http("/metrics")
        assert status == 200 and b"whatschat_gateway_deliveries_total" in body


def test_resume_replays_what_was_missed_then_continues_live(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    sender: Sender,
) -> None:
    gw = start_gateway(GATEWAY_REPLAY_MAX_MESSAGES="50")
    alice, bob = make_user(), make_user()
    group = create_conversation(clean_db, [alice.id, bob.id])
    busy = create_conversation(clean_db, [alice.id, bob.id])

    async def scenario() -> None:
        client = Client(alice.token, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        for i in range(3):
            await asyncio.to_thread(sender.send, group, bob.id, f"m{i}")
        await wait_until(lambda: len(client.seqs.get(group, [])) == 3, 10, "live")
        await ws.close()
        await reader
        for i in range(7):  # missed while away
            await asyncio.to_thread(sender.send, group, bob.id, f"away {i}")
        for i in range(80):  # far too many: catch up through history
            await asyncio.to_thread(sender.send, busy, bob.id, f"busy {i}", publish=False)
        ws = await client.open(gw.url)
        client.seqs.pop(busy, None)
        positions_sent = client.positions()
        assert positions_sent == {str(group): 3}
        reader = asyncio.create_task(_read_allowing_catch_up(client, ws))
        await asyncio.wait_for(client.ready.wait(), 10)
        assert client.seqs[group] == list(range(1, 11))
        catch_up = [c for c in client.control if c["op"] == "catch_up"]
        assert catch_up == [
            {"op": "catch_up", "conversation_id": busy, "after_seq": 0, "up_to_seq": 80}
        ]
        await asyncio.to_thread(sender.send, group, bob.id, "live again")
        await asyncio.to_thread(sender.send, busy, bob.id, "busy live")
        await wait_until(lambda: client.seqs[group][-1] == 11, 10, "live after resume")
        await wait_until(lambda: client.seqs.get(busy) == [81], 10, "live after catch-up")
        ready = [c for c in client.control if c["op"] == "ready"][-1]
        assert ready["conversations"][str(group)]["last_seq"] == 10
        await ws.close()
        await reader

    asyncio.run(scenario())


async def _read_allowing_catch_up(client: Client, ws: Any) -> None:
    try:
        async for raw in ws:
            doc = orjson.loads(raw)
            if doc.get("op") == "catch_up":
                client.control.append(doc)
                continue
            client.take(raw)
    except ConnectionClosed:
        pass


def test_live_events_during_replay_are_neither_lost_nor_duplicated(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    stack: Stack,
) -> None:
    gw = start_gateway(GATEWAY_REPLAY_MAX_MESSAGES="100000")
    alice, bob = make_user(), make_user()
    group = create_conversation(clean_db, [alice.id, bob.id])
    senders = [Sender(stack.database_url, stack.redis_url) for _ in range(3)]
    for i in range(40):
        senders[0].send(group, bob.id, f"before {i}")

    async def scenario() -> None:
        stop = asyncio.Event()

        async def keep_sending(s: Sender) -> None:
            while not stop.is_set():
                await asyncio.to_thread(s.send, group, bob.id, "during")

        sending = [asyncio.create_task(keep_sending(s)) for s in senders]
        clients = []
        for _ in range(8):  # resume repeatedly while messages keep coming
            c = Client(alice.token, [gw.url])
            c.seqs[group] = [0]  # "I hold nothing": position 0
            ws = await c.open(gw.url)
            c.seqs[group] = []
            clients.append((c, ws, asyncio.create_task(c.read(ws))))
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*sending)
        last = max(
            int(
                clean_db.execute(
                    "SELECT last_seq FROM conversations WHERE id = %s", (group,)
                ).fetchone()[0]
            ),  # type: ignore[index]
            0,
        )
        for c, _, _ in clients:
            with contextlib.suppress(AssertionError):  # assert_complete says what is wrong
                await wait_until(lambda c=c: len(c.seqs.get(group, [])) >= last, 20, "all")
        await asyncio.sleep(0.3)
        for c, ws, reader in clients:
            assert c.ready.is_set(), (c.control, c.closes, ws.state)
            c.assert_complete({group: last})
            await ws.close()
            await reader

    asyncio.run(scenario())
    for s in senders:
        s.close()


def test_joining_a_conversation_subscribes_live_and_replays_from_the_join(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    sender: Sender,
) -> None:
    gw = start_gateway()
    alice, bob = make_user(), make_user()
    group = create_conversation(clean_db, [bob.id])
    sender.send(group, bob.id, "before alice")

    async def scenario() -> None:
        client = Client(alice.token, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        clean_db.execute(
            "INSERT INTO members (conversation_id, user_id, joined_seq) VALUES (%s, %s, 1)",
            (group, alice.id),
        )
        # A message lands between the join and the personal event: it must not be lost.
        await asyncio.to_thread(sender.send, group, bob.id, "right after the join")
        sender.publish(Event("member.added", {"conversation_id": group}, user_id=alice.id))
        await asyncio.to_thread(sender.send, group, bob.id, "welcome")
        await wait_until(lambda: client.seqs.get(group) == [2, 3], 10, "messages since join")
        # Removed: nothing after left_seq arrives any more.
        clean_db.execute(
            "UPDATE members SET left_seq = 3 WHERE conversation_id = %s AND user_id = %s",
            (group, alice.id),
        )
        sender.publish(Event("member.removed", {"conversation_id": group}, user_id=alice.id))
        await wait_until(lambda: any(c["op"] == "left" for c in client.control), 10, "left")
        await asyncio.to_thread(sender.send, group, bob.id, "after alice left")
        await asyncio.sleep(0.5)
        assert client.seqs[group] == [2, 3]
        await ws.close()
        await reader

    asyncio.run(scenario())


def test_out_of_order_publish_is_reordered_and_a_never_published_message_is_filled(
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    start_gateway: StartGateway,
    sender: Sender,
) -> None:
    gw = start_gateway(GATEWAY_GAP_WAIT_SECONDS="0.2")
    alice, bob = make_user(), make_user()
    group = create_conversation(clean_db, [alice.id, bob.id])

    async def scenario() -> None:
        client = Client(alice.token, [gw.url])
        ws, reader = await client.open_ready(gw.url)
        await asyncio.to_thread(sender.send, group, bob.id, "1")
        # seq 2 committed but its publish was lost (the function crashed): the
        # outbox sweeper would publish it later; the gateway fills the gap.
        await asyncio.to_thread(sender.send, group, bob.id, "2", publish=False)
        await asyncio.to_thread(sender.send, group, bob.id, "3")
        await wait_until(lambda: client.seqs.get(group) == [1, 2, 3], 10, "gap filled")
        await ws.close()
        await reader

    asyncio.run(scenario())
    _, body = gw.http("/metrics")
    assert b"whatschat_gateway_gap_fills_total 1.0" in body
