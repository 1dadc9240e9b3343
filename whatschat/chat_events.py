"""Every chat event the functions publish, built in one place.

Each builder returns a :class:`whatschat.events.Event` for exactly one
audience: a conversation channel (every member sees it, one PUBLISH whatever
the group size) or one user's channel (personal: you joined or left a
conversation, so your gateways subscribe or unsubscribe your sockets).

Rules the gateway and clients rely on (docs/events.md):

- A conversation event whose envelope ``seq`` is set created the message with
  that seq, and carries it as ``data.message`` (a MessageView) — the same
  shape history, sync and replay return. A client that saw seq N and misses
  N+1 asks for everything after N.
- Events that create no message (edits, deletions, read positions, personal
  events) carry ``seq: null``; the seq they are about is inside ``data``.
"""

from __future__ import annotations

from typing import Any

from whatschat.events import Event
from whatschat.schemas import MessageView


def _message(view: MessageView) -> dict[str, Any]:
    return view.model_dump(mode="json")


def _recorded(type_: str, message: MessageView, **data: Any) -> Event:
    """A conversation event recorded by the system message ``message``: the
    envelope's seq is the message's, and ``data`` carries it whole."""
    return Event(
        type_,
        {"conversation_id": message.conversation_id, **data, "message": _message(message)},
        conversation_id=message.conversation_id,
        seq=message.seq,
    )


def message_created(view: MessageView) -> Event:
    return Event(
        "message.created",
        {"message": _message(view)},
        conversation_id=view.conversation_id,
        seq=view.seq,
    )


def message_edited(view: MessageView, edit_seq: int) -> Event:
    """The new text of an existing message (``data.seq`` is the message's seq)."""
    return Event(
        "message.edited",
        {"seq": view.seq, "edit_seq": edit_seq, "message": _message(view)},
        conversation_id=view.conversation_id,
    )


def message_deleted(view: MessageView, edit_seq: int) -> Event:
    """The tombstone of a deleted message (``data.message.deleted`` is true)."""
    return Event(
        "message.deleted",
        {"seq": view.seq, "edit_seq": edit_seq, "message": _message(view)},
        conversation_id=view.conversation_id,
    )


def read_updated(conversation_id: int, user_id: int, read_seq: int) -> Event:
    """A member read the conversation up to ``read_seq``."""
    return Event(
        "read.updated",
        {"conversation_id": conversation_id, "user_id": user_id, "read_seq": read_seq},
        conversation_id=conversation_id,
    )


def conversation_created_for(
    user_id: int, conversation_id: int, member_ids: list[int], created_by: int
) -> Event:
    """Personal, on ``user_id``'s channel: a direct conversation with them exists now.

    Its window starts at 0 (``joined_seq``): every message is theirs to read.
    """
    return Event(
        "conversation.created",
        {
            "conversation_id": conversation_id,
            "kind": "direct",
            "member_ids": member_ids,
            "created_by": created_by,
            "joined_seq": 0,
        },
        user_id=user_id,
    )


def group_created(
    message: MessageView,
    *,
    title: str,
    description: str | None,
    created_by: int,
    member_ids: list[int],
) -> Event:
    return _recorded(
        "group.created",
        message,
        title=title,
        description=description,
        created_by=created_by,
        member_ids=member_ids,
    )


def group_updated(
    message: MessageView, *, title: str, description: str | None, actor_id: int
) -> Event:
    return _recorded(
        "group.updated",
        message,
        title=title,
        description=description,
        actor_id=actor_id,
    )


def member_added(message: MessageView, *, user_id: int, role: str, actor_id: int) -> Event:
    """On the conversation channel: a member joined (seq of the system message)."""
    return _recorded("member.added", message, user_id=user_id, role=role, actor_id=actor_id)


def member_added_for(
    user_id: int, *, conversation_id: int, role: str, seq: int, joined_seq: int, actor_id: int
) -> Event:
    """Personal, on the added user's channel: subscribe them to the conversation.

    They may read every message after ``joined_seq`` (``seq`` is the system
    message recording the addition, the first one they see).
    """
    return Event(
        "member.added",
        {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "role": role,
            "seq": seq,
            "joined_seq": joined_seq,
            "actor_id": actor_id,
        },
        user_id=user_id,
    )


def member_removed(message: MessageView, *, user_id: int, actor_id: int, reason: str) -> Event:
    """On the conversation channel: a member left (reason "left") or was removed."""
    return _recorded("member.removed", message, user_id=user_id, actor_id=actor_id, reason=reason)


def member_removed_for(
    user_id: int, *, conversation_id: int, left_seq: int, actor_id: int, reason: str
) -> Event:
    """Personal, on the removed user's channel: unsubscribe them.

    They still receive everything up to and including ``left_seq`` (the
    message recording their removal) and nothing after.
    """
    return Event(
        "member.removed",
        {
            "conversation_id": conversation_id,
            "user_id": user_id,
            "left_seq": left_seq,
            "actor_id": actor_id,
            "reason": reason,
        },
        user_id=user_id,
    )


def member_role_changed(
    message: MessageView, *, user_id: int, role: str, actor_id: int | None
) -> Event:
    """``actor_id`` is None when the server promoted the longest-standing member
    because the last admin left."""
    return _recorded("member.role_changed", message, user_id=user_id, role=role, actor_id=actor_id)
