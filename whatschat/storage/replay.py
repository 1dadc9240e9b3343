"""The gateway's reads: a user's memberships and the messages a socket missed.

Synchronous (the gateway runs these in a thread). Memberships and each
conversation's ``last_seq`` come from the primary: they are read right after
the gateway subscribed, and every seq up to ``last_seq`` must be replayed
while every later one will arrive live. Messages come from the replica when
it has them all, else from the primary (read-your-writes, as the history
function does). See docs/gateway.md ("Resume").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from whatschat.storage import database
from whatschat.storage.messages import fetch_after_txn, memberships_txn

logger = logging.getLogger("whatschat.gateway.replay")


@dataclass
class Membership:
    """A user's place in one conversation, as the gateway needs it."""

    conversation_id: int
    role: str
    joined_seq: int  # sees seq > joined_seq
    left_seq: int | None  # sees seq <= left_seq; None while a member
    read_seq: int
    last_seq: int  # the conversation's last seq when read
    kind: str = "group"  # "direct" or "group"
    peer_id: int | None = None  # the other user of a direct conversation


@dataclass
class Replay:
    """What one resume must send for one conversation."""

    membership: Membership
    after_seq: int  # the client's position (or where its window starts)
    messages: list[dict[str, Any]] = field(default_factory=list)  # rows in seq order
    too_far: bool = False  # more than the limit missed: the client pages through history


def memberships(user_id: int, left_of: list[int] | None = None) -> list[Membership]:
    """Current memberships, plus the ended ones among ``left_of`` (primary)."""
    with database.primary() as conn:
        rows = memberships_txn(conn, user_id)
        extra = _details_txn(conn, user_id, [row["conversation_id"] for row in rows])
        found = [
            _membership(row, *extra.get(row["conversation_id"], ("group", None))) for row in rows
        ]
        current = {m.conversation_id for m in found}
        wanted = [cid for cid in (left_of or []) if cid not in current]
        if wanted:
            found.extend(_ended_txn(conn, user_id, wanted))
    return found


def _details_txn(
    conn: database.Connection, user_id: int, conversation_ids: list[int]
) -> dict[int, tuple[str, int | None]]:
    """conversation_id -> (kind, the other member of a direct conversation)."""
    if not conversation_ids:
        return {}
    rows: list[dict[str, Any]] = conn.execute(
        """
        SELECT c.id, c.kind,
               (SELECT o.user_id FROM members o
                 WHERE c.kind = 'direct' AND o.conversation_id = c.id AND o.user_id <> %(user)s
                 LIMIT 1) AS peer_id
        FROM conversations c
        WHERE c.id = ANY(%(ids)s)
        """,
        {"user": user_id, "ids": conversation_ids},
    ).fetchall()
    return {int(row["id"]): (str(row["kind"]), _opt(row["peer_id"])) for row in rows}


def _ended_txn(
    conn: database.Connection, user_id: int, conversation_ids: list[int]
) -> list[Membership]:
    rows: list[dict[str, Any]] = conn.execute(
        """
        SELECT mb.conversation_id, mb.role, mb.joined_seq, mb.left_seq, mb.read_seq,
               c.last_seq, c.kind
        FROM members mb JOIN conversations c ON c.id = mb.conversation_id
        WHERE mb.user_id = %s AND mb.conversation_id = ANY(%s) AND mb.left_seq IS NOT NULL
        """,
        (user_id, conversation_ids),
    ).fetchall()
    return [_membership(row, str(row["kind"]), None) for row in rows]


def _opt(value: Any) -> int | None:
    return None if value is None else int(value)


def _membership(row: dict[str, Any], kind: str, peer_id: int | None) -> Membership:
    return Membership(
        conversation_id=int(row["conversation_id"]),
        role=str(row["role"]),
        joined_seq=int(row["joined_seq"]),
        left_seq=_opt(row["left_seq"]),
        read_seq=int(row["read_seq"]),
        last_seq=int(row["last_seq"]),
        kind=kind,
        peer_id=peer_id,
    )


def missed(found: list[Membership], positions: dict[int, int], limit: int) -> dict[int, Replay]:
    """The messages after each position, within each member's window, up to ``limit``.

    Conversations absent from ``positions`` are not replayed.
    """
    plans: dict[int, Replay] = {}
    reads: list[Replay] = []
    for membership in found:
        position = positions.get(membership.conversation_id)
        if position is None:
            continue
        upper = membership.last_seq if membership.left_seq is None else membership.left_seq
        start = max(position, membership.joined_seq)
        plan = Replay(membership, start)
        plans[membership.conversation_id] = plan
        if upper - start > limit:
            plan.too_far = True
        elif upper > start:
            reads.append(plan)
    if reads:
        pending = reads
        if database.replica_configured():
            pending = _read(reads, replica=True)
        if pending:
            _read(pending, replica=False)
    return plans


def _read(plans: list[Replay], *, replica: bool) -> list[Replay]:
    """Fill each plan's messages; return the plans this server could not serve in full."""
    short: list[Replay] = []
    try:
        with database.replica() if replica else database.primary() as conn:
            for plan in plans:
                m = plan.membership
                upper = m.last_seq if m.left_seq is None else m.left_seq
                rows = fetch_after_txn(
                    conn,
                    m.conversation_id,
                    plan.after_seq,
                    upper - plan.after_seq,
                    visible_from=m.joined_seq,
                    visible_to=upper,
                )
                if len(rows) < upper - plan.after_seq:
                    short.append(plan)  # the replica has not replayed them yet
                else:
                    plan.messages = rows
    except database.DatabaseUnavailable:
        if not replica:
            raise
        logger.warning("replica unavailable; replaying from the primary")
        return plans
    return short


def between(conversation_id: int, after_seq: int, before_seq: int) -> list[dict[str, Any]]:
    """Messages with after_seq < seq < before_seq (primary: they were just published)."""
    if before_seq - after_seq <= 1:
        return []
    with database.primary() as conn:
        return fetch_after_txn(
            conn,
            conversation_id,
            after_seq,
            before_seq - after_seq - 1,
            visible_to=before_seq - 1,
        )
