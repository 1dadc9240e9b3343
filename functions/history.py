"""GET /v1/history/{conversation_id}?after_seq=&before_seq=&limit=: a page of messages.

See docs/messaging.md (history).
"""

from __future__ import annotations

from typing import Annotated

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from whatschat.api import Call, Router
from whatschat.chat_fields import Seq
from whatschat.history import DEFAULT_PAGE_SIZE, HistoryPage, page


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after_seq: Seq | None = None  # ascending page of the messages after this seq
    before_seq: Seq | None = None  # descending page before this seq (default: the newest)
    limit: Annotated[int, Field(ge=1, le=10_000)] = DEFAULT_PAGE_SIZE  # capped at MAX_PAGE_SIZE


router = Router("history")


@router.route(
    "GET",
    "/v1/history/{conversation_id:int}",
    query=HistoryQuery,
    response=HistoryPage,
    errors=(404,),
)
def get_history(call: Call[BaseModel, HistoryQuery]) -> HistoryPage:
    """A page of a conversation's messages by seq, in either direction."""
    query = call.query
    return page(
        call.user_id,
        call.path["conversation_id"],
        after_seq=query.after_seq,
        before_seq=query.before_seq,
        limit=query.limit,
    )


@functions_framework.http
def history(request: flask.Request) -> flask.Response:
    return router.handle(request)
