"""GET /v1/conversations, GET /v1/conversations/{id}, POST /v1/conversations/direct.

My conversations (last message, unread count, most recently active first),
one conversation with its members and read positions, and opening the direct
conversation with another user. See docs/messaging.md.
"""

from __future__ import annotations

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict

from whatschat.api import Call, Empty, Reply, Router
from whatschat.chat_fields import Username
from whatschat.conversations import (
    ConversationDetail,
    ConversationList,
    get_conversation,
    list_conversations,
    open_direct,
)


class OpenDirect(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Username  # the other user


router = Router("conversations")


@router.route("GET", "/v1/conversations", response=ConversationList)
def list_mine(call: Call[Empty, Empty]) -> ConversationList:
    """List my conversations with their last message and unread count, newest activity first."""
    return list_conversations(call.user_id)


@router.route(
    "POST",
    "/v1/conversations/direct",
    body=OpenDirect,
    response=ConversationDetail,
    status=201,
    errors=(404,),
    also=((200, "The direct conversation already existed"),),
)
def open_direct_conversation(call: Call[OpenDirect, Empty]) -> Reply:
    """Open the direct conversation with a user (201), or get the existing one (200)."""
    detail, created = open_direct(call.user_id, call.body.username)
    return Reply(detail, 201 if created else 200)


@router.route(
    "GET",
    "/v1/conversations/{conversation_id:int}",
    response=ConversationDetail,
    errors=(404,),
)
def get_one(call: Call[Empty, Empty]) -> ConversationDetail:
    """Get one conversation with its members and their read positions."""
    return get_conversation(call.user_id, call.path["conversation_id"])


@functions_framework.http
def conversations(request: flask.Request) -> flask.Response:
    return router.handle(request)
