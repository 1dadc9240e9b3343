"""PATCH and DELETE /v1/messages/{conversation_id}/{seq}: edit or delete your own message.

Neither takes a new seq; each takes the conversation's next edit seq, which
sync's edit positions follow. See docs/messaging.md.
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict

from whatschat import messaging
from whatschat.api import Call, Empty, Router
from whatschat.chat_fields import Text
from whatschat.schemas import MessageView


class EditMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text  # the new text, at most MAX_MESSAGE_CHARS


router = Router("messages")

PATH = "/v1/messages/{conversation_id:int}/{seq:int}"


@router.route("PATCH", PATH, body=EditMessage, response=MessageView, errors=(403, 404, 409))
def edit_message(call: Call[EditMessage, Empty]) -> MessageView:
    """Replace the text of your own message."""
    return messaging.edit(
        call.user_id, call.path["conversation_id"], call.path["seq"], call.body.text
    )


@router.route("DELETE", PATH, response=MessageView, errors=(403, 404))
def delete_message(call: Call[Empty, Empty]) -> MessageView:
    """Delete your own message, leaving a tombstone (text and attachment gone)."""
    return messaging.delete(call.user_id, call.path["conversation_id"], call.path["seq"])


@functions_framework.http
def messages(request: flask.Request) -> flask.Response:
    return router.handle(request)
