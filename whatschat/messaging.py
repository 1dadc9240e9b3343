"""Send, edit and delete messages.

Send is one transaction: lock the conversation row while taking its next
seq, check membership and an earlier send with the same ``client_msg_id``,
insert the message and its outbox event; commit; publish. A retried send
returns the original message (``created`` False → HTTP 200). Edits and
deletions keep the seq and take an edit seq instead (docs/messaging.md).
"""

from __future__ import annotations

import uuid
from typing import Any

from whatschat import chat_events, outbox, ratelimit
from whatschat.config import get_settings
from whatschat.conversations import check_member
from whatschat.problems import Problem, not_found, rate_limited
from whatschat.schemas import MessageView, message_view
from whatschat.storage import conversations as conversation_rows
from whatschat.storage import database
from whatschat.storage import messages as message_rows
from whatschat.storage.database import Connection


class _AlreadySent(Exception):
    """The sender's earlier message with this client_msg_id exists (a retry)."""


class _Unchanged(Exception):
    """Nothing to write (e.g. deleting a deleted message): roll back, answer with ``view``."""

    def __init__(self, view: MessageView) -> None:
        super().__init__("unchanged")
        self.view = view  # the message as it is


def _field_problem(field: str, message: str, detail: str | None = None) -> Problem:
    return Problem(
        "validation-failed",
        detail or f"{field} {message}",
        errors=[{"field": field, "message": message, "type": "value_error"}],
    )


def check_text(text: str) -> str:
    """Non-blank and at most MAX_MESSAGE_CHARS characters; else 422."""
    limit = get_settings().max_message_chars
    if not text.strip():
        raise _field_problem("text", "must not be blank")
    if len(text) > limit:
        raise _field_problem("text", f"must be at most {limit} characters")
    return text


def check_send_rate(sender_id: int) -> None:
    """429 + Retry-After beyond SEND_RATE_LIMIT sends per window.

    Fails open: without Redis a send must still succeed (the outbox holds its
    event until Redis returns), so an outage lifts the limit instead.
    """
    settings = get_settings()
    limit = ratelimit.Limit("send", settings.send_rate_limit, settings.send_rate_window_seconds)
    decision = ratelimit.hit(limit, str(sender_id), fail_open=True)
    if not decision.allowed:
        raise rate_limited(decision.retry_after, "You are sending too fast")


def send(
    sender_id: int,
    conversation_id: int,
    client_msg_id: str,
    *,
    text: str | None = None,
    reply_to_seq: int | None = None,
    attachment_id: uuid.UUID | None = None,
) -> tuple[MessageView, bool]:
    """Send a message; return it and whether this call created it (False: a retry)."""
    if text is None and attachment_id is None:
        raise _field_problem("text", "is required without an attachment_id")
    if text is not None:
        check_text(text)
    check_send_rate(sender_id)
    try:
        with outbox.transaction() as txn:
            view = _send_txn(
                txn, sender_id, conversation_id, client_msg_id, text, reply_to_seq, attachment_id
            )
        return view, True
    except (_AlreadySent, message_rows.DuplicateClientMsgId):
        return _original(sender_id, conversation_id, client_msg_id), False


def _send_txn(
    txn: outbox.Transaction,
    sender_id: int,
    conversation_id: int,
    client_msg_id: str,
    text: str | None,
    reply_to_seq: int | None,
    attachment_id: uuid.UUID | None,
) -> MessageView:
    # Two statements: lock + checks, then message + event. The message's id
    # and time are taken in the first, so its event is built in between.
    conn = txn.conn
    context = message_rows.lock_for_send_txn(conn, conversation_id, sender_id, client_msg_id)
    if context is None or not context["is_member_row"]:
        raise not_found(f"No conversation {conversation_id}")
    if context["left_seq"] is not None:
        raise _no_longer_member()
    if context["dup_seq"] is not None:
        raise _AlreadySent()
    seq = int(context["last_seq"])
    if reply_to_seq is not None and not context["joined_seq"] < reply_to_seq < seq:
        raise _field_problem("reply_to_seq", "is not a message of this conversation you can see")
    attachment: dict[str, Any] = {}
    if attachment_id is not None:
        found = message_rows.attachment_txn(conn, attachment_id)
        if (
            found is None
            or found["conversation_id"] != conversation_id
            or found["uploader_id"] != sender_id
        ):
            raise _field_problem("attachment_id", "is not a file you uploaded to this conversation")
        attachment = {f"attachment_{key}": found[key] for key in _ATTACHMENT_FIELDS}
    row = {
        "id": context["message_id"],
        "conversation_id": conversation_id,
        "seq": seq,
        "sender_id": sender_id,
        "client_msg_id": client_msg_id,
        "kind": "file" if attachment_id is not None else "text",
        "body": text,
        "reply_to_seq": reply_to_seq,
        "attachment_id": attachment_id,
        "system_event": None,
        "created_at": context["created_at"],
        "edited_at": None,
        "deleted_at": None,
        **attachment,
    }
    view = message_view(row)
    event = chat_events.message_created(view)
    payload = event.encode()
    outbox_id = message_rows.insert_sent_txn(conn, row, channel=event.channel, payload=payload)
    if outbox_id is None:  # removed from the conversation while we waited for its lock
        raise _no_longer_member()
    txn.emitted(outbox_id, event.channel, payload)
    return view


_ATTACHMENT_FIELDS = ("file_name", "content_type", "size_bytes")


def _no_longer_member() -> Problem:
    return Problem("forbidden", "You are no longer a member of this conversation")


def _original(sender_id: int, conversation_id: int, client_msg_id: str) -> MessageView:
    """The message an earlier send with this client_msg_id created (409 if elsewhere)."""
    with database.primary() as conn:
        context = message_rows.send_context_txn(conn, conversation_id, sender_id, client_msg_id)
        if context["dup_seq"] is None:  # pragma: no cover - the row was there a moment ago
            raise Problem("conflict", "Retry the send")
        if context["dup_conversation_id"] != conversation_id:
            raise Problem(
                "conflict", "This client_msg_id was already used for another conversation"
            )
        row = message_rows.get_txn(conn, conversation_id, int(context["dup_seq"]))
        assert row is not None
        return message_view(row)


def edit(user_id: int, conversation_id: int, seq: int, text: str) -> MessageView:
    """Replace the text of the caller's own message (message.edited)."""
    check_text(text)
    with outbox.transaction() as txn:
        message, edit_seq = _own_message_txn(txn.conn, user_id, conversation_id, seq)
        if message["deleted_at"] is not None:
            raise Problem("conflict", "The message was deleted")
        view = message_view(message_rows.edit_txn(txn.conn, conversation_id, seq, text, edit_seq))
        txn.emit(chat_events.message_edited(view, edit_seq))
    return view


def delete(user_id: int, conversation_id: int, seq: int) -> MessageView:
    """Delete the caller's own message, leaving a tombstone (message.deleted).

    Deleting a deleted message answers with the tombstone and changes nothing.
    """
    try:
        with outbox.transaction() as txn:
            message, edit_seq = _own_message_txn(txn.conn, user_id, conversation_id, seq)
            if message["deleted_at"] is not None:
                raise _Unchanged(message_view(message))
            view = message_view(message_rows.delete_txn(txn.conn, conversation_id, seq, edit_seq))
            txn.emit(chat_events.message_deleted(view, edit_seq))
        return view
    except _Unchanged as unchanged:
        return unchanged.view


def _own_message_txn(
    conn: Connection, user_id: int, conversation_id: int, seq: int
) -> tuple[dict[str, Any], int]:
    """Lock the conversation, take an edit seq, and check the message is the caller's."""
    edit_seq = conversation_rows.take_edit_seq_txn(conn, conversation_id)
    if edit_seq is None:
        raise not_found(f"No conversation {conversation_id}")
    membership = check_member(conn, conversation_id, user_id, current=False)
    message = message_rows.get_txn(conn, conversation_id, seq)
    visible_to = membership["left_seq"] or membership["last_seq"]
    if message is None or not membership["joined_seq"] < seq <= visible_to:
        raise not_found(f"No message {seq} in conversation {conversation_id}")
    if membership["left_seq"] is not None:
        raise Problem("forbidden", "You are no longer a member of this conversation")
    if message["sender_id"] != user_id:
        raise Problem("forbidden", "You can only change your own messages")
    return message, edit_seq
