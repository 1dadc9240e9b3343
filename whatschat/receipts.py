"""Read positions: "I have read this conversation up to seq N".

A position only moves forward and never past the conversation's last seq.
Moving it publishes read.updated on the conversation channel so the other
members' devices show it; the positions are also in GET
/v1/conversations/{id} (members) and POST /v1/sync. See docs/messaging.md.
"""

from __future__ import annotations

from pydantic import BaseModel

from whatschat import chat_events, outbox
from whatschat.conversations import check_member
from whatschat.storage import members as member_rows


class ReadPosition(BaseModel):
    """Where a member has read up to."""

    conversation_id: int
    user_id: int
    read_seq: int


def mark_read(user_id: int, conversation_id: int, seq: int) -> ReadPosition:
    """Move the caller's read position to ``seq`` (clamped to last_seq; never back)."""
    with outbox.transaction() as txn:
        membership = check_member(txn.conn, conversation_id, user_id)
        target = min(seq, int(membership["last_seq"]))
        moved = member_rows.advance_read_txn(txn.conn, conversation_id, user_id, target)
        if moved is not None:
            txn.emit(chat_events.read_updated(conversation_id, user_id, moved))
        position = moved if moved is not None else max(int(membership["read_seq"]), target)
    return ReadPosition(conversation_id=conversation_id, user_id=user_id, read_seq=position)
