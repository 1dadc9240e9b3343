"""POST /v1/groups: create a group with its first members; you are its admin.

See docs/messaging.md (groups).
"""

from __future__ import annotations

from typing import Annotated

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from whatschat.api import Call, Empty, Router
from whatschat.chat_fields import Description, Id, Title, Username
from whatschat.conversations import ConversationDetail
from whatschat.groups import create


class CreateGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title
    description: Description | None = None
    # the other members by id and/or username (at most MAX_GROUP_MEMBERS - 1 in all)
    member_ids: Annotated[list[Id], Field(max_length=10_000)] = []
    usernames: Annotated[list[Username], Field(max_length=10_000)] = []


router = Router("group_create")


@router.route("POST", "/v1/groups", body=CreateGroup, response=ConversationDetail, status=201)
def create_group(call: Call[CreateGroup, Empty]) -> ConversationDetail:
    """Create a group: members, a system message (seq 1), group.created and member.added."""
    body = call.body
    return create(
        call.user_id,
        body.title,
        body.member_ids,
        description=body.description or None,
        usernames=body.usernames,
    )


@functions_framework.http
def group_create(request: flask.Request) -> flask.Response:
    return router.handle(request)
