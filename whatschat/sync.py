"""Sync: what changed since a client last looked.

The client sends, per conversation it knows, the last seq it has
(``positions``) and optionally the last edit seq it has (``edit_positions``).
The answer has, for every conversation the caller belongs to and every
listed one they left:

- the missed messages after the position (at most
  SYNC_MESSAGES_PER_CONVERSATION; ``has_more`` says "too far behind: page the
  rest with GET /v1/history?after_seq=<next_cursor>"),
- the messages edited or deleted after the edit position (``edits``, in edit
  order, ``edits_has_more`` when capped),
- the members' read positions (conversations of at most
  READ_POSITIONS_MAX_MEMBERS members),
- the conversation itself (title, membership, unread count, ...).

Conversations the client did not list and belongs to are in ``joined``
(their window starts at ``joined_seq``); listed ones the caller left are in
``left`` (still delivered up to ``left_seq``); listed ids the caller cannot
read are in ``unknown``. See docs/messaging.md.
"""

from __future__ import annotations

from pydantic import BaseModel

from whatschat import reads
from whatschat.config import get_settings
from whatschat.conversations import ConversationView, views_txn
from whatschat.receipts import ReadPosition
from whatschat.schemas import MessageView, message_view
from whatschat.storage import conversations as conversation_rows
from whatschat.storage import members as member_rows
from whatschat.storage import messages as message_rows

# Read positions are sent for conversations up to this size; for larger
# groups GET /v1/conversations/{id} lists them.
READ_POSITIONS_MAX_MEMBERS = 256
# Edited messages per conversation in one answer.
EDITS_PER_CONVERSATION = 100


class ConversationSync(BaseModel):
    """What changed in one conversation."""

    conversation: ConversationView
    messages: list[MessageView]  # seq > position (or > joined_seq when not listed), ascending
    has_more: bool  # too far behind: page with history after next_cursor
    next_cursor: int  # the last seq covered by this answer: the client's new position
    edits: list[MessageView]  # edited or deleted after the edit position, in edit order
    edits_has_more: bool  # ask again with edit_positions set to edit_cursor
    edit_cursor: int  # the client's new edit position for this conversation
    read_positions: list[ReadPosition] | None  # None for groups over READ_POSITIONS_MAX_MEMBERS


class SyncResult(BaseModel):
    """The answer of POST /v1/sync."""

    conversations: list[ConversationSync]
    joined: list[int]  # conversations the client did not list and the caller belongs to
    left: list[int]  # listed conversations the caller is no longer a member of
    unknown: list[int]  # listed ids the caller cannot read (never a member, or no such)


def sync(
    user_id: int, positions: dict[int, int], edit_positions: dict[int, int] | None = None
) -> SyncResult:
    """Everything the caller missed since ``positions`` (conversation id -> seq)."""
    edit_positions = edit_positions or {}
    limit = get_settings().sync_messages_per_conversation

    def work(reader: reads.Reader) -> SyncResult:
        conn = reader.conn
        current = views_txn(conn, user_id)
        current_ids = {view.id for view in current}
        listed_elsewhere = [cid for cid in positions if cid not in current_ids]
        former = (
            views_txn(conn, user_id, ids=listed_elsewhere, current_only=False)
            if listed_elsewhere
            else []
        )
        views = current + former
        # Read-your-writes: the replica must cover every position the client has.
        if reader.on_replica and (positions or edit_positions):
            replayed = conversation_rows.positions_txn(
                conn, sorted(set(positions) | set(edit_positions))
            )
            for cid, seq in positions.items():
                reader.require(replayed.get(cid, (-1, -1))[0] >= seq, f"conversation {cid}")
            for cid, edit_seq in edit_positions.items():
                reader.require(replayed.get(cid, (-1, -1))[1] >= edit_seq, f"edits of {cid}")

        windows: list[tuple[int, int, int]] = []
        edit_windows: list[tuple[int, int, int, int]] = []
        for view in views:
            upto = view.left_seq if view.left_seq is not None else view.last_seq
            after = max(positions.get(view.id, view.joined_seq), view.joined_seq)
            windows.append((view.id, after, upto))
            edit_windows.append((view.id, edit_positions.get(view.id, 0), view.joined_seq, upto))
        missed: dict[int, list[MessageView]] = {}
        for row in message_rows.fetch_after_many_txn(conn, windows, limit + 1):
            missed.setdefault(row["conversation_id"], []).append(message_view(row))
        edited: dict[int, list[tuple[MessageView, int]]] = {}
        for row in message_rows.fetch_edited_many_txn(
            conn, edit_windows, EDITS_PER_CONVERSATION + 1
        ):
            edited.setdefault(row["conversation_id"], []).append(
                (message_view(row), int(row["edit_seq"]))
            )
        reads_by_conversation = member_rows.read_positions_txn(
            conn, [view.id for view in views], READ_POSITIONS_MAX_MEMBERS
        )

        entries = []
        for view, (_, after, _upto) in zip(views, windows, strict=True):
            messages = missed.get(view.id, [])
            has_more = len(messages) > limit
            messages = messages[:limit]
            edits = edited.get(view.id, [])
            edits_has_more = len(edits) > EDITS_PER_CONVERSATION
            edits = edits[:EDITS_PER_CONVERSATION]
            if edits_has_more:
                edit_cursor = edits[-1][1]
            else:
                edit_cursor = max(view.last_edit_seq, edit_positions.get(view.id, 0))
            read_positions: list[ReadPosition] | None = None
            if view.membership == "left":
                read_positions = []  # a former member no longer sees who reads what
            elif view.id in reads_by_conversation:
                read_positions = [
                    ReadPosition(conversation_id=view.id, user_id=uid, read_seq=seq)
                    for uid, seq in reads_by_conversation[view.id]
                ]
            entries.append(
                ConversationSync(
                    conversation=view,
                    messages=messages,
                    has_more=has_more,
                    next_cursor=messages[-1].seq if messages else after,
                    edits=[message for message, _ in edits],
                    edits_has_more=edits_has_more,
                    edit_cursor=edit_cursor,
                    read_positions=read_positions,
                )
            )
        return SyncResult(
            conversations=entries,
            joined=sorted(cid for cid in current_ids if cid not in positions),
            left=sorted(view.id for view in former if view.membership == "left"),
            unknown=sorted(set(listed_elsewhere) - {view.id for view in former}),
        )

    return reads.read(work)
