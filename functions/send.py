"""POST /v1/messages: send a message (201), or get the original back on a retry (200).

See docs/messaging.md (send write path).
"""

from __future__ import annotations

import uuid

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict

from whatschat import messaging
from whatschat.api import Call, Empty, Reply, Router
from whatschat.chat_fields import ClientMsgId, Id, Seq, Text
from whatschat.schemas import MessageView


class SendMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: Id
    client_msg_id: ClientMsgId  # unique per sender; a retry with the same id returns the original
    text: Text | None = None  # at most MAX_MESSAGE_CHARS; required without attachment_id
    reply_to_seq: Seq | None = None  # a message of the conversation the sender can see
    attachment_id: uuid.UUID | None = None  # a completed upload of the sender's, same conversation


router = Router("send")


@router.route(
    "POST",
    "/v1/messages",
    body=SendMessage,
    response=MessageView,
    status=201,
    errors=(403, 404, 409, 429),
    also=((200, "A retry: the message first sent with this client_msg_id"),),
    own_rate_limit=True,  # SEND_RATE_LIMIT per user, checked in messaging.send
)
def send_message(call: Call[SendMessage, Empty]) -> Reply:
    """Send a message (201); a retry with the same client_msg_id returns the original (200)."""
    body = call.body
    message, created = messaging.send(
        call.user_id,
        body.conversation_id,
        body.client_msg_id,
        text=body.text,
        reply_to_seq=body.reply_to_seq,
        attachment_id=body.attachment_id,
    )
    return Reply(message, 201 if created else 200)


@functions_framework.http
def send(request: flask.Request) -> flask.Response:
    return router.handle(request)
