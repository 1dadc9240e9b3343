"""POST /v1/receipts: I have read this conversation up to seq N.

See docs/messaging.md (receipts).
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict

from whatschat.api import Call, Empty, Router
from whatschat.chat_fields import Id, Seq
from whatschat.receipts import ReadPosition, mark_read


class MarkRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: Id
    seq: Seq  # read up to here; clamped to the last seq, never moves back


router = Router("receipts")


@router.route("POST", "/v1/receipts", body=MarkRead, response=ReadPosition, errors=(403, 404))
def mark_conversation_read(call: Call[MarkRead, Empty]) -> ReadPosition:
    """Move my read position forward; other members see read.updated."""
    return mark_read(call.user_id, call.body.conversation_id, call.body.seq)


@functions_framework.http
def receipts(request: flask.Request) -> flask.Response:
    return router.handle(request)
