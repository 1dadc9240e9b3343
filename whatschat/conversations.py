"""Conversations: open a direct one, list mine, get one; membership checks for all.

A caller who was never a member of a conversation gets 404 for everything
about it, exactly as if it did not exist. A former member keeps reading what
they were entitled to (up to their ``left_seq``) but cannot write: 403.
See docs/messaging.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from whatschat import chat_events, outbox, reads
from whatschat.problems import Problem, not_found
from whatschat.schemas import MessageView, message_view
from whatschat.storage import conversations as conversation_rows
from whatschat.storage import members as member_rows
from whatschat.storage import messages as message_rows
from whatschat.storage.database import Connection


class PeerView(BaseModel):
    """The other user of a direct conversation."""

    id: int
    username: str
    display_name: str


class MemberView(BaseModel):
    """A current member and how far they have read."""

    user_id: int
    username: str
    display_name: str
    role: Literal["admin", "member"]
    joined_seq: int  # they see messages after this seq
    read_seq: int  # read up to this seq
    joined_at: datetime


class ConversationView(BaseModel):
    """A conversation as the caller sees it."""

    id: int
    kind: Literal["direct", "group"]
    title: str | None  # groups only
    description: str | None
    peer: PeerView | None  # direct conversations only
    created_by: int | None
    created_at: datetime
    last_activity_at: datetime  # of the last message; the list is ordered by it
    last_seq: int  # the conversation's newest seq
    last_edit_seq: int  # the newest edit/delete; sync edit positions compare with it
    membership: Literal["member", "left"]
    role: Literal["admin", "member"] | None  # None once left
    joined_seq: int  # the caller sees messages with joined_seq < seq <= left_seq
    left_seq: int | None
    read_seq: int  # the caller's read position
    unread_count: int  # visible messages after read_seq
    last_message: MessageView | None  # the newest message the caller may see


class ConversationDetail(ConversationView):
    """One conversation with its current members (empty for a former member)."""

    members: list[MemberView]


class ConversationList(BaseModel):
    """The caller's current conversations, most recently active first."""

    conversations: list[ConversationView]


def check_member(
    conn: Connection, conversation_id: int, user_id: int, *, current: bool = True
) -> dict[str, Any]:
    """The caller's membership row (see storage.members.membership_txn).

    404 when they were never a member (or it does not exist); 403 when
    ``current`` is asked and they left.
    """
    membership = member_rows.membership_txn(conn, conversation_id, user_id)
    if membership is None:
        raise not_found(f"No conversation {conversation_id}")
    if current and membership["left_seq"] is not None:
        raise Problem("forbidden", "You are no longer a member of this conversation")
    return membership


def views_txn(
    conn: Connection,
    user_id: int,
    *,
    ids: list[int] | None = None,
    current_only: bool = True,
) -> list[ConversationView]:
    """The caller's conversations (all, or ``ids``) with their last visible message."""
    rows = conversation_rows.for_user_txn(conn, user_id, ids=ids, current_only=current_only)
    last_positions = [
        (r["id"], _visible_last(r)) for r in rows if _visible_last(r) > r["joined_seq"]
    ]
    last_messages = {
        row["conversation_id"]: message_view(row)
        for row in message_rows.fetch_at_txn(conn, last_positions)
    }
    return [_view(row, last_messages.get(row["id"])) for row in rows]


def _visible_last(row: dict[str, Any]) -> int:
    last: int = row["last_seq"] if row["left_seq"] is None else row["left_seq"]
    return last


def _view(row: dict[str, Any], last_message: MessageView | None) -> ConversationView:
    peer = None
    if row["peer_id"] is not None:
        peer = PeerView(
            id=row["peer_id"], username=row["peer_username"], display_name=row["peer_display_name"]
        )
    left = row["left_seq"] is not None
    return ConversationView(
        id=row["id"],
        kind=row["kind"],
        title=row["title"],
        description=row["description"],
        peer=peer,
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_activity_at=row["updated_at"],
        last_seq=row["last_seq"],
        last_edit_seq=row["last_edit_seq"],
        membership="left" if left else "member",
        role=None if left else row["role"],
        joined_seq=row["joined_seq"],
        left_seq=row["left_seq"],
        read_seq=row["read_seq"],
        unread_count=max(0, _visible_last(row) - max(row["read_seq"], row["joined_seq"])),
        last_message=last_message,
    )


def view_txn(conn: Connection, user_id: int, conversation_id: int) -> ConversationView:
    """The caller's view of one conversation they belong or belonged to; else 404."""
    found = views_txn(conn, user_id, ids=[conversation_id], current_only=False)
    if not found:
        raise not_found(f"No conversation {conversation_id}")
    return found[0]


def detail_txn(conn: Connection, user_id: int, conversation_id: int) -> ConversationDetail:
    view = view_txn(conn, user_id, conversation_id)
    members: list[MemberView] = []
    if view.membership == "member":
        members = [MemberView(**row) for row in member_rows.current_txn(conn, conversation_id)]
    return ConversationDetail(**view.model_dump(), members=members)


def list_conversations(user_id: int) -> ConversationList:
    """GET /v1/conversations."""
    return reads.read(lambda r: ConversationList(conversations=views_txn(r.conn, user_id)))


def get_conversation(user_id: int, conversation_id: int) -> ConversationDetail:
    """GET /v1/conversations/{id}: 404 unless the caller is or was a member."""
    return reads.read(lambda r: detail_txn(r.conn, user_id, conversation_id))


def open_direct(user_id: int, username: str) -> tuple[ConversationDetail, bool]:
    """Open the direct conversation with ``username``, or get the existing one.

    Returns the conversation and whether this call created it. Creating it
    tells both users' devices (conversation.created on each user channel).
    """
    with outbox.transaction() as txn:
        peer_id = member_rows.user_id_by_username_txn(txn.conn, username)
        if peer_id is None:
            raise not_found(f"No user named {username!r}")
        if peer_id == user_id:
            raise Problem(
                "validation-failed",
                "A direct conversation needs another user",
                errors=[{"field": "username", "message": "is yourself", "type": "value_error"}],
            )
        low, high = sorted((user_id, peer_id))
        conversation_id = conversation_rows.insert_direct_txn(txn.conn, f"{low}:{high}", user_id)
        created = conversation_id is not None
        if conversation_id is None:
            conversation_id = conversation_rows.find_direct_txn(txn.conn, f"{low}:{high}")
            assert conversation_id is not None
        else:
            member_rows.add_txn(
                txn.conn,
                conversation_id,
                [(low, "member"), (high, "member")],
                joined_seq=0,
                read_seq=0,
            )
            for member in (low, high):
                txn.emit(
                    chat_events.conversation_created_for(
                        member, conversation_id, [low, high], user_id
                    )
                )
        detail = detail_txn(txn.conn, user_id, conversation_id)
    return detail, created
