"""Groups: create, update, add/remove members, change roles, leave.

Every change is one transaction that locks the group (taking a seq), writes a
system message recording the change — so it has a seq and is replayed to a
client resuming after a disconnect — and emits its events: one on the group's
channel, plus one on the user channel of whoever joined or left, so their
gateways subscribe or unsubscribe them.

Only admins manage. When the last admin leaves a group that still has
members, the longest-standing member (smallest ``joined_seq``, then earliest
join, then lowest id) becomes admin, recorded by a second system message
(member.role_changed with ``actor_id: null``). An admin cannot demote themselves
when they are the only admin (409): they promote someone first, or leave.
See docs/messaging.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from whatschat import chat_events, outbox
from whatschat.config import get_settings
from whatschat.conversations import (
    ConversationDetail,
    ConversationView,
    check_member,
    detail_txn,
    view_txn,
)
from whatschat.problems import Problem, not_found
from whatschat.schemas import MessageView, message_view
from whatschat.storage import conversations as conversation_rows
from whatschat.storage import database
from whatschat.storage import members as member_rows
from whatschat.storage import messages as message_rows
from whatschat.storage.database import Connection


class GroupChange(BaseModel):
    """The caller's view of the group after a change, and the system message recording it."""

    conversation: ConversationView
    message: MessageView | None  # None when nothing changed


class _Unchanged(Exception):
    """The change asked for is already in place: roll back (give the seq back)."""


# A change inside the locked transaction: (txn, seq taken, caller's membership)
# -> the system message recording it.
Apply = Callable[[outbox.Transaction, int, dict[str, Any]], MessageView]


def _field_problem(field: str, message: str) -> Problem:
    return Problem(
        "validation-failed",
        f"{field} {message}",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


def _system_message_txn(
    conn: Connection, conversation_id: int, seq: int, event: dict[str, Any]
) -> MessageView:
    row = message_rows.insert_txn(
        conn, conversation_id=conversation_id, seq=seq, kind="system", system_event=event
    )
    return message_view(row)


def _user_ids_txn(conn: Connection, usernames: list[str], field: str = "usernames") -> list[int]:
    """The ids of these usernames; 422 naming the unknown ones."""
    found = member_rows.user_ids_by_usernames_txn(conn, usernames)
    unknown = sorted({name for name in usernames if name.lower() not in found})
    if unknown:
        raise _field_problem(field, f"has unknown usernames {unknown}")
    return [found[name.lower()] for name in usernames]


def create(
    creator_id: int,
    title: str,
    member_ids: list[int],
    description: str | None = None,
    usernames: list[str] | None = None,
) -> ConversationDetail:
    """Create a group: the creator (admin) plus ``member_ids`` and ``usernames``;
    system message seq 1."""
    limit = get_settings().max_group_members
    with outbox.transaction() as txn:
        conn = txn.conn
        unknown = sorted(set(member_ids) - member_rows.existing_user_ids_txn(conn, member_ids))
        if unknown:
            raise _field_problem("member_ids", f"has unknown user ids {unknown}")
        named = _user_ids_txn(conn, usernames) if usernames else []
        others = sorted((set(member_ids) | set(named)) - {creator_id})
        if len(others) + 1 > limit:
            raise _field_problem("member_ids", f"a group has at most {limit} members")
        conversation_id = conversation_rows.insert_group_txn(
            conn, title, description, creator_id, last_seq=1
        )
        member_rows.add_txn(
            conn, conversation_id, [(creator_id, "admin")], joined_seq=0, read_seq=1
        )
        member_rows.add_txn(
            conn, conversation_id, [(uid, "member") for uid in others], joined_seq=0, read_seq=0
        )
        everyone = [creator_id, *others]
        message = _system_message_txn(
            conn,
            conversation_id,
            1,
            {
                "type": "group.created",
                "actor_id": creator_id,
                "title": title,
                "description": description,
                "member_ids": everyone,
            },
        )
        # Personal events first: gateways subscribe the members to the group's channel.
        for uid in everyone:
            txn.emit(
                chat_events.member_added_for(
                    uid,
                    conversation_id=conversation_id,
                    role="admin" if uid == creator_id else "member",
                    seq=1,
                    joined_seq=0,
                    actor_id=creator_id,
                )
            )
        txn.emit(
            chat_events.group_created(
                message,
                title=title,
                description=description,
                created_by=creator_id,
                member_ids=everyone,
            )
        )
        return detail_txn(conn, creator_id, conversation_id)


def _lock_group_txn(conn: Connection, group_id: int, actor_id: int) -> tuple[int, dict[str, Any]]:
    """Lock the group taking one seq; the caller must be a current member.

    Returns (the seq taken, the caller's membership).
    """
    group = conversation_rows.take_seqs_txn(conn, group_id)
    if group is None or group["kind"] != "group":
        raise not_found(f"No group {group_id}")
    membership = check_member(conn, group_id, actor_id)
    return int(group["last_seq"]), membership


def _require_admin(membership: dict[str, Any]) -> None:
    if membership["role"] != "admin":
        raise Problem("forbidden", "Only the group's admins can do this")


def _change(actor_id: int, group_id: int, apply: Apply) -> GroupChange:
    """Run ``apply`` in a transaction holding the group's lock; answer with the
    caller's view after it (nothing written when it raises _Unchanged)."""
    try:
        with outbox.transaction() as txn:
            seq, membership = _lock_group_txn(txn.conn, group_id, actor_id)
            message = apply(txn, seq, membership)
            view = view_txn(txn.conn, actor_id, group_id)
        return GroupChange(conversation=view, message=message)
    except _Unchanged:
        with database.primary() as conn:
            view = view_txn(conn, actor_id, group_id)
        return GroupChange(conversation=view, message=None)


def update(
    actor_id: int,
    group_id: int,
    *,
    title: str | None = None,
    description: str | None = None,
    set_description: bool = False,
) -> GroupChange:
    """Rename the group and/or set its description (admins).

    ``set_description`` False keeps the description; True sets it to
    ``description`` (None or empty removes it).
    """

    def apply(txn: outbox.Transaction, seq: int, membership: dict[str, Any]) -> MessageView:
        _require_admin(membership)
        new_title = title if title is not None else membership["title"]
        new_description = (description or None) if set_description else membership["description"]
        if new_title == membership["title"] and new_description == membership["description"]:
            raise _Unchanged()
        conversation_rows.update_group_txn(txn.conn, group_id, new_title, new_description)
        message = _system_message_txn(
            txn.conn,
            group_id,
            seq,
            {
                "type": "group.updated",
                "actor_id": actor_id,
                "title": new_title,
                "description": new_description,
            },
        )
        txn.emit(
            chat_events.group_updated(
                message, title=new_title, description=new_description, actor_id=actor_id
            )
        )
        return message

    return _change(actor_id, group_id, apply)


def add_member(
    actor_id: int, group_id: int, user_id: int | None = None, username: str | None = None
) -> GroupChange:
    """Add a user, by id or username (admins). They see the group from the system
    message recording it."""

    def apply(txn: outbox.Transaction, seq: int, membership: dict[str, Any]) -> MessageView:
        _require_admin(membership)
        conn = txn.conn
        if username is not None:
            new_id = _user_ids_txn(conn, [username], field="username")[0]
        elif user_id is not None and member_rows.existing_user_ids_txn(conn, [user_id]):
            new_id = user_id
        else:
            raise _field_problem("user_id", f"is not a user ({user_id})")
        current = member_rows.membership_txn(conn, group_id, new_id)
        if current is not None and current["left_seq"] is None:
            raise Problem("conflict", f"User {new_id} is already a member")
        members, _ = member_rows.counts_txn(conn, group_id)
        limit = get_settings().max_group_members
        if members >= limit:
            raise Problem("conflict", f"The group is full ({limit} members)")
        member_rows.add_txn(
            conn, group_id, [(new_id, "member")], joined_seq=seq - 1, read_seq=seq - 1
        )
        message = _system_message_txn(
            conn,
            group_id,
            seq,
            {"type": "member.added", "actor_id": actor_id, "user_id": new_id, "role": "member"},
        )
        txn.emit(
            chat_events.member_added_for(
                new_id,
                conversation_id=group_id,
                role="member",
                seq=seq,
                joined_seq=seq - 1,
                actor_id=actor_id,
            )
        )
        txn.emit(
            chat_events.member_added(message, user_id=new_id, role="member", actor_id=actor_id)
        )
        return message

    return _change(actor_id, group_id, apply)


def remove_member(actor_id: int, group_id: int, user_id: int) -> GroupChange:
    """Remove a member (admins); removing yourself is leaving."""
    if user_id == actor_id:
        return leave(actor_id, group_id)

    def apply(txn: outbox.Transaction, seq: int, membership: dict[str, Any]) -> MessageView:
        _require_admin(membership)
        target = member_rows.membership_txn(txn.conn, group_id, user_id)
        if target is None or target["left_seq"] is not None:
            raise not_found(f"User {user_id} is not a member of group {group_id}")
        return _remove_txn(txn, group_id, seq, user_id, actor_id=actor_id, reason="removed")

    return _change(actor_id, group_id, apply)


def _remove_txn(
    txn: outbox.Transaction, group_id: int, seq: int, user_id: int, *, actor_id: int, reason: str
) -> MessageView:
    """Close the member's window at ``seq``, the system message recording it: they
    see their own removal and nothing after."""
    member_rows.leave_txn(txn.conn, group_id, user_id, left_seq=seq)
    message = _system_message_txn(
        txn.conn,
        group_id,
        seq,
        {"type": "member.removed", "actor_id": actor_id, "user_id": user_id, "reason": reason},
    )
    # The conversation event first: the member's gateways still relay it, then
    # the personal event unsubscribes them.
    txn.emit(chat_events.member_removed(message, user_id=user_id, actor_id=actor_id, reason=reason))
    txn.emit(
        chat_events.member_removed_for(
            user_id, conversation_id=group_id, left_seq=seq, actor_id=actor_id, reason=reason
        )
    )
    return message


def set_role(actor_id: int, group_id: int, user_id: int, role: str) -> GroupChange:
    """Make a member admin or member (admins). The only admin cannot demote themselves."""

    def apply(txn: outbox.Transaction, seq: int, membership: dict[str, Any]) -> MessageView:
        _require_admin(membership)
        conn = txn.conn
        target = member_rows.membership_txn(conn, group_id, user_id)
        if target is None or target["left_seq"] is not None:
            raise not_found(f"User {user_id} is not a member of group {group_id}")
        if target["role"] == role:
            raise _Unchanged()
        if (
            role == "member"
            and user_id == actor_id
            and member_rows.counts_txn(conn, group_id)[1] == 1
        ):
            raise Problem("conflict", "You are the only admin: make someone else admin first")
        member_rows.set_role_txn(conn, group_id, user_id, role)
        message = _system_message_txn(
            conn,
            group_id,
            seq,
            {"type": "member.role_changed", "actor_id": actor_id, "user_id": user_id, "role": role},
        )
        txn.emit(
            chat_events.member_role_changed(message, user_id=user_id, role=role, actor_id=actor_id)
        )
        return message

    return _change(actor_id, group_id, apply)


def leave(actor_id: int, group_id: int) -> GroupChange:
    """Leave the group. The last admin leaving promotes the longest-standing member."""

    def apply(txn: outbox.Transaction, seq: int, membership: dict[str, Any]) -> MessageView:
        conn = txn.conn
        message = _remove_txn(txn, group_id, seq, actor_id, actor_id=actor_id, reason="left")
        members, admins = member_rows.counts_txn(conn, group_id)
        if membership["role"] == "admin" and admins == 0 and members > 0:
            successor = member_rows.longest_standing_txn(conn, group_id)
            assert successor is not None
            taken = conversation_rows.take_seqs_txn(conn, group_id)
            assert taken is not None
            member_rows.set_role_txn(conn, group_id, successor, "admin")
            promotion = _system_message_txn(
                conn,
                group_id,
                int(taken["last_seq"]),
                {
                    "type": "member.role_changed",
                    "actor_id": None,
                    "user_id": successor,
                    "role": "admin",
                    "reason": "last-admin-left",
                },
            )
            txn.emit(
                chat_events.member_role_changed(
                    promotion, user_id=successor, role="admin", actor_id=None
                )
            )
        return message

    return _change(actor_id, group_id, apply)
