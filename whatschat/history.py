"""History: pages of a conversation's messages by seq, in either direction.

``after_seq`` pages forward (ascending), ``before_seq`` backward
(descending); neither gives the newest page (descending). Pages hold at most
MAX_PAGE_SIZE messages and only the caller's window (``joined_seq < seq <=
left_seq``). Reads the replica unless it has not replayed the seq the client
named (docs/messaging.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from whatschat import reads
from whatschat.config import get_settings
from whatschat.conversations import check_member
from whatschat.problems import Problem
from whatschat.schemas import MessageView, message_view
from whatschat.storage import messages as message_rows

DEFAULT_PAGE_SIZE = 50


class HistoryPage(BaseModel):
    """One page of messages."""

    conversation_id: int
    direction: Literal["after", "before"]  # ascending after a seq, descending before one
    messages: list[MessageView]
    has_more: bool  # more messages lie further in this direction
    # Pass as after_seq (direction "after") or before_seq ("before") for the next page.
    next_cursor: int | None
    last_seq: int  # the newest seq the caller may see now


def page(
    user_id: int,
    conversation_id: int,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
) -> HistoryPage:
    """A page of the caller's view of the conversation; 404 unless they are or were a member."""
    if after_seq is not None and before_seq is not None:
        raise Problem(
            "validation-failed",
            "Give after_seq or before_seq, not both",
            errors=[
                {"field": "before_seq", "message": "excludes after_seq", "type": "value_error"}
            ],
        )
    size = min(limit, get_settings().max_page_size)

    def work(reader: reads.Reader) -> HistoryPage:
        membership = check_member(reader.conn, conversation_id, user_id, current=False)
        known = after_seq if after_seq is not None else (before_seq or 1) - 1
        reader.require(membership["last_seq"] >= known, f"last_seq below {known}")
        visible_from = membership["joined_seq"]
        visible_to = membership["left_seq"]
        newest = visible_to if visible_to is not None else membership["last_seq"]
        if after_seq is not None:
            rows = message_rows.fetch_after_txn(
                reader.conn,
                conversation_id,
                after_seq,
                size + 1,
                visible_from=visible_from,
                visible_to=visible_to,
            )
        else:
            rows = message_rows.fetch_before_txn(
                reader.conn,
                conversation_id,
                before_seq if before_seq is not None else newest + 1,
                size + 1,
                visible_from=visible_from,
                visible_to=visible_to,
            )
        messages = [message_view(row) for row in rows[:size]]
        return HistoryPage(
            conversation_id=conversation_id,
            direction="after" if after_seq is not None else "before",
            messages=messages,
            has_more=len(rows) > size,
            next_cursor=messages[-1].seq if messages else None,
            last_seq=newest,
        )

    return reads.read(work)
