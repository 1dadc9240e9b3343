"""The whole chain: functions write and publish (outbox), gateways relay to sockets.

Groups are created and changed, and messages sent, through the real
functions (tests/messaging_helpers.Chat drives them through
functions-framework); the sockets are on two gateway processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import AppUser, Stack
from tests.gateway_fixtures import Client, GatewayProcess, run_all, stack_env, stop_all, wait_until
from tests.messaging_helpers import Chat

pytest_plugins = ["tests.messaging_fixtures"]


@pytest.fixture
def gateways(stack: Stack, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    started = [GatewayProcess(stack_env(), tmp_path).start() for _ in range(2)]
    yield started
    for gateway in started:
        gateway.stop()


def test_sends_group_changes_and_removal_reach_the_right_sockets(
    chat: Chat,
    clean_db: psycopg.Connection[Any],
    make_user: Callable[..., AppUser],
    gateways: list[GatewayProcess],
) -> None:
    alice, bob, carol = make_user(), make_user(), make_user()

    async def scenario() -> None:
        clients = {
            name: Client(user.token, [gateways[i % 2].url])
            for i, (name, user) in enumerate((("alice", alice), ("bob", bob), ("carol", carol)))
        }
        runs = await run_all(clients.values())
        # Created while everyone is connected: bob's gateway learns it from
        # his user channel, subscribes, and replays from his join.
        group = await asyncio.to_thread(chat.group, alice, [bob], "Team")
        for i in range(5):
            await asyncio.to_thread(chat.send, alice, group, f"hello {i}")
        last = int(
            clean_db.execute(
                "SELECT last_seq FROM conversations WHERE id = %s", (group,)
            ).fetchone()[0]  # type: ignore[index]
        )
        await wait_until(
            lambda: all(len(clients[n].seqs.get(group, [])) == last for n in ("alice", "bob")),
            15,
            "alice and bob to hold every message",
        )
        await asyncio.to_thread(
            chat.ok, alice, "POST", f"/v1/groups/{group}/members", {"user_id": carol.id}
        )
        joined = int(
            clean_db.execute(
                "SELECT joined_seq FROM members WHERE conversation_id = %s AND user_id = %s",
                (group, carol.id),
            ).fetchone()[0]  # type: ignore[index]
        )
        await asyncio.to_thread(chat.send, bob, group, "welcome carol")
        await asyncio.to_thread(chat.ok, alice, "DELETE", f"/v1/groups/{group}/members/{bob.id}")
        left = int(
            clean_db.execute(
                "SELECT left_seq FROM members WHERE conversation_id = %s AND user_id = %s",
                (group, bob.id),
            ).fetchone()[0]  # type: ignore[index]
        )
        for i in range(3):
            await asyncio.to_thread(chat.send, alice, group, f"after bob {i}")
        final = int(
            clean_db.execute(
                "SELECT last_seq FROM conversations WHERE id = %s", (group,)
            ).fetchone()[0]  # type: ignore[index]
        )
        await wait_until(
            lambda: (
                len(clients["alice"].seqs.get(group, [])) == final
                and clients["carol"].seqs.get(group, [None])[-1] == final
                and any(f["op"] == "left" for f in clients["bob"].control)
            ),
            15,
            "everyone's view to settle",
        )
        await asyncio.sleep(0.3)
        clients["alice"].assert_complete({group: final})
        assert clients["carol"].seqs[group] == list(range(joined + 1, final + 1))
        assert clients["bob"].seqs[group] == list(range(1, left + 1))
        left_frame = next(f for f in clients["bob"].control if f["op"] == "left")
        assert left_frame == {"op": "left", "conversation_id": group, "last_seq": left}
        texts = [
            e["data"]["message"]["text"]
            for e in clients["carol"].events
            if e["type"] == "message.created" and e["data"]["message"]["kind"] == "text"
        ]
        assert texts == ["welcome carol", "after bob 0", "after bob 1", "after bob 2"]
        await stop_all(clients.values(), runs)

    asyncio.run(scenario())
