"""One connected socket's delivery state: per conversation, what it has been sent.

This is the resume state machine, without I/O. For each conversation the
session keeps a :class:`Cursor`: the last ``seq`` written to the socket,
the live events held back while a replay from PostgreSQL runs, and the
events that arrived ahead of a missing ``seq``. The rule it enforces: the
socket receives each conversation's messages in ``seq`` order, each once,
with no gap. Events without ``seq`` (edits, deletions, read positions,
typing) pass straight through, except during a replay, when they wait for
it to finish. See docs/gateway.md ("Resume").

The asyncio shell (gateway/server.py) calls :meth:`Session.hold` before it
subscribes or reads PostgreSQL, then :meth:`Session.replay` with what it
read; the router (gateway/routing.py) calls :meth:`Session.deliver` for
every live event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


class Cursor:
    """Delivery state of one conversation on one socket."""

    __slots__ = ("delivered", "gap_reported", "held", "joined_seq", "syncing", "unsequenced")

    def __init__(self, delivered: int, joined_seq: int) -> None:
        self.delivered = delivered  # last seq written to the socket (or skipped by catch_up)
        self.joined_seq = joined_seq  # the member sees seq > joined_seq only
        self.syncing = True  # a replay is running: hold every live event
        self.held: dict[int, bytes] = {}  # seq -> frame, live events not yet writable
        self.unsequenced: list[bytes] = []  # seq-less events that arrived during a replay
        self.gap_reported = False  # the shell was told about the current gap


class Session:
    """What one socket of one user has been sent, and where its frames go."""

    __slots__ = (
        "closed",
        "cursors",
        "direct_peers",
        "held_count",
        "held_max",
        "on_gap",
        "on_overflow",
        "session_id",
        "user_id",
        "write",
    )

    def __init__(
        self,
        session_id: str,
        user_id: int,
        write: Callable[[bytes], None],
        *,
        held_max: int,
        on_gap: Callable[[Session, int], None],
        on_overflow: Callable[[Session], None],
    ) -> None:
        self.session_id = session_id  # random, for logs and the ready frame
        self.user_id = user_id  # the authenticated user
        self.write = write  # writes one complete WebSocket frame to the socket
        self.held_max = held_max  # held events per session before on_overflow
        self.on_gap = on_gap  # a conversation has a missing seq: fill it from PostgreSQL
        self.on_overflow = on_overflow  # too much held: the socket must resume from scratch
        self.cursors: dict[int, Cursor] = {}  # conversation_id -> state, current memberships
        self.held_count = 0  # events held over all cursors
        self.direct_peers: dict[int, int] = {}  # direct conversation_id -> the other user
        self.closed = False  # no more writes: the socket is closing

    # --- the hot path ---------------------------------------------------------

    def deliver(self, conversation_id: int, seq: int | None, frame: bytes) -> None:
        """A live event of a conversation (already framed, shared by every recipient)."""
        cursor = self.cursors.get(conversation_id)
        if cursor is None or self.closed:
            return
        if seq is None:
            if cursor.syncing:
                cursor.unsequenced.append(frame)
                self._count_held(1)
            else:
                self.write(frame)
            return
        delivered = cursor.delivered
        if seq <= delivered:
            return  # already sent (a republished event, or replayed before it came live)
        if seq == delivered + 1 and not cursor.syncing:
            self.write(frame)
            cursor.delivered = seq
            if cursor.held:
                self._release(conversation_id, cursor)
            return
        if seq not in cursor.held:
            cursor.held[seq] = frame
            self._count_held(1)
        if not cursor.syncing and not cursor.gap_reported:
            cursor.gap_reported = True
            self.on_gap(self, conversation_id)

    def write_personal(self, frame: bytes) -> None:
        """An event of the user's own channel (no sequence)."""
        if not self.closed:
            self.write(frame)

    # --- replay ---------------------------------------------------------------

    def hold(self, conversation_id: int, delivered: int, joined_seq: int) -> None:
        """Start (or restart) a replay of a conversation: hold its live events from now.

        A new conversation starts at ``delivered``; a known one keeps its own
        position (never moves back).
        """
        cursor = self.cursors.get(conversation_id)
        if cursor is None:
            self.cursors[conversation_id] = Cursor(max(delivered, joined_seq), joined_seq)
        else:
            cursor.syncing = True
            cursor.joined_seq = joined_seq
            # Nothing at or before the join is visible: the replay starts after it.
            cursor.delivered = max(cursor.delivered, joined_seq)

    def replay(
        self,
        conversation_id: int,
        messages: Iterable[tuple[int, bytes]],
        up_to: int,
        *,
        catch_up: bool = False,
    ) -> None:
        """Write replayed messages (seq-ordered frames), then what was held, and go live.

        ``up_to`` is the conversation's last seq as read after subscribing: every
        seq up to it is in ``messages`` unless ``catch_up`` (the client fetches
        the rest through history, so the position jumps to ``up_to``).
        """
        cursor = self.cursors.get(conversation_id)
        if cursor is None or self.closed:
            return
        self._write_in_order(conversation_id, cursor, messages)
        if catch_up and up_to > cursor.delivered:
            cursor.delivered = up_to
        cursor.syncing = False
        cursor.gap_reported = False
        self._release(conversation_id, cursor)
        if cursor.unsequenced:
            pending, cursor.unsequenced = cursor.unsequenced, []
            self._count_held(-len(pending))
            for frame in pending:
                self.write(frame)

    def fill(self, conversation_id: int, messages: Iterable[tuple[int, bytes]]) -> None:
        """Messages read from PostgreSQL to close a gap between live events."""
        cursor = self.cursors.get(conversation_id)
        if cursor is None or self.closed or cursor.syncing:
            return  # a replay running now covers the gap
        cursor.gap_reported = False
        self._write_in_order(conversation_id, cursor, messages)
        self._release(conversation_id, cursor)

    def gap(self, conversation_id: int) -> tuple[int, int] | None:
        """The missing range (after, before) of a conversation, or None if there is none."""
        cursor = self.cursors.get(conversation_id)
        if cursor is None or cursor.syncing or not cursor.held:
            return None
        return cursor.delivered, min(cursor.held)

    def forget(self, conversation_id: int) -> None:
        """The user left the conversation: stop delivering it."""
        cursor = self.cursors.pop(conversation_id, None)
        if cursor is not None:
            self._count_held(-(len(cursor.held) + len(cursor.unsequenced)))

    def positions(self) -> dict[int, int]:
        """conversation_id -> last seq delivered: where a repair resumes from."""
        return {cid: cursor.delivered for cid, cursor in self.cursors.items()}

    # --- internals ------------------------------------------------------------

    def _write_in_order(
        self, conversation_id: int, cursor: Cursor, messages: Iterable[tuple[int, bytes]]
    ) -> None:
        for seq, frame in messages:
            if seq <= cursor.delivered:
                continue
            if seq == cursor.delivered + 1:
                self.write(frame)
                cursor.delivered = seq
            elif seq not in cursor.held:
                cursor.held[seq] = frame
                self._count_held(1)

    def _release(self, conversation_id: int, cursor: Cursor) -> None:
        """Write held events that are now next in line; drop those already sent."""
        held = cursor.held
        released = 0
        for seq in [s for s in held if s <= cursor.delivered]:
            del held[seq]
            released += 1
        nxt = cursor.delivered + 1
        while nxt in held:
            self.write(held.pop(nxt))
            released += 1
            cursor.delivered = nxt
            nxt += 1
        if released:
            self._count_held(-released)
        if held and not cursor.syncing and not cursor.gap_reported:
            cursor.gap_reported = True
            self.on_gap(self, conversation_id)

    def _count_held(self, change: int) -> None:
        self.held_count += change
        if self.held_count > self.held_max and not self.closed:
            self.closed = True
            self.on_overflow(self)


def membership_change(event: dict[str, Any]) -> tuple[str, int] | None:
    """("joined" | "left", conversation_id) when a personal event changes memberships.

    Publishers put the conversation's id in ``data.conversation_id`` (or in
    ``data.conversation.id`` for conversation.created / group.created).
    """
    kind = event.get("type")
    if kind not in ("member.added", "member.removed", "conversation.created", "group.created"):
        return None
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    cid = data.get("conversation_id")
    if cid is None and isinstance(data.get("conversation"), dict):
        cid = data["conversation"].get("id")
    if isinstance(cid, bool) or not isinstance(cid, int):
        return None
    return ("left" if kind == "member.removed" else "joined"), cid
