"""Managing a group: update it, add/remove members, change roles (admins), leave.

PATCH /v1/groups/{id}, POST /v1/groups/{id}/members,
DELETE and PATCH /v1/groups/{id}/members/{user_id}, POST /v1/groups/{id}/leave.
See docs/messaging.md (groups, the last-admin rule).
"""

from __future__ import annotations

from typing import Literal

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, model_validator

from whatschat import groups as group_ops
from whatschat.api import Call, Empty, Router
from whatschat.chat_fields import Description, Id, Title, Username
from whatschat.groups import GroupChange
from whatschat.problems import Problem


class UpdateGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None  # "" or null removes it


class AddMember(BaseModel):
    """Exactly one of user_id and username."""

    model_config = ConfigDict(extra="forbid")

    user_id: Id | None = None
    username: Username | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> AddMember:
        if (self.user_id is None) == (self.username is None):
            raise ValueError("give exactly one of user_id and username")
        return self


class SetRole(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "member"]


router = Router("groups")

GROUP = "/v1/groups/{group_id:int}"
MEMBER = "/v1/groups/{group_id:int}/members/{user_id:int}"


@router.route("PATCH", GROUP, body=UpdateGroup, response=GroupChange, errors=(403, 404))
def update_group(call: Call[UpdateGroup, Empty]) -> GroupChange:
    """Rename the group or change its description (admins)."""
    body = call.body
    if not body.model_fields_set:
        raise Problem(
            "validation-failed",
            "Give title and/or description",
            errors=[{"field": "title", "message": "nothing to change", "type": "missing"}],
        )
    return group_ops.update(
        call.user_id,
        call.path["group_id"],
        title=body.title,
        description=body.description,
        set_description="description" in body.model_fields_set,
    )


@router.route(
    "POST",
    f"{GROUP}/members",
    body=AddMember,
    response=GroupChange,
    status=201,
    errors=(403, 404, 409),
)
def add_member(call: Call[AddMember, Empty]) -> GroupChange:
    """Add a member (admins); they see the group from the system message recording it."""
    return group_ops.add_member(
        call.user_id, call.path["group_id"], call.body.user_id, call.body.username
    )


@router.route("DELETE", MEMBER, response=GroupChange, errors=(403, 404))
def remove_member(call: Call[Empty, Empty]) -> GroupChange:
    """Remove a member (admins); they keep what they saw up to their removal."""
    return group_ops.remove_member(call.user_id, call.path["group_id"], call.path["user_id"])


@router.route("PATCH", MEMBER, body=SetRole, response=GroupChange, errors=(403, 404, 409))
def set_role(call: Call[SetRole, Empty]) -> GroupChange:
    """Make a member admin or member (admins)."""
    return group_ops.set_role(
        call.user_id, call.path["group_id"], call.path["user_id"], call.body.role
    )


@router.route("POST", f"{GROUP}/leave", response=GroupChange, errors=(403, 404))
def leave_group(call: Call[Empty, Empty]) -> GroupChange:
    """Leave the group; if you were its last admin, its longest-standing member becomes admin."""
    return group_ops.leave(call.user_id, call.path["group_id"])


@functions_framework.http
def groups(request: flask.Request) -> flask.Response:
    return router.handle(request)
