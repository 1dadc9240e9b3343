"""POST /v1/sync: everything a returning client missed, from its positions.

See docs/messaging.md (sync).
"""

from __future__ import annotations

from typing import Annotated

import flask
import functions_framework
from pydantic import BaseModel, ConfigDict, Field

from whatschat.api import Call, Empty, Router
from whatschat.chat_fields import Id, Seq
from whatschat.sync import SyncResult
from whatschat.sync import sync as sync_positions

MAX_POSITIONS = 5000


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # conversation id -> the last seq the client has
    positions: Annotated[dict[Id, Seq], Field(max_length=MAX_POSITIONS)] = {}
    # conversation id -> the last edit seq the client has (0 or absent: every edit)
    edit_positions: Annotated[dict[Id, Seq], Field(max_length=MAX_POSITIONS)] = {}


router = Router("sync")


@router.route("POST", "/v1/sync", body=SyncRequest, response=SyncResult)
def sync_since(call: Call[SyncRequest, Empty]) -> SyncResult:
    """Missed messages, edits, read positions and membership changes since my positions."""
    return sync_positions(call.user_id, call.body.positions, call.body.edit_positions)


@functions_framework.http
def sync(request: flask.Request) -> flask.Response:
    return router.handle(request)
