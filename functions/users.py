"""GET /v1/users/{username}: find a user to start a chat with. See docs/auth.md (endpoints)."""

from __future__ import annotations

import flask
import functions_framework

from whatschat import accounts
from whatschat.accounts import PublicProfile
from whatschat.api import Call, Empty, Router

router = Router("users")


@router.route("GET", "/v1/users/{username}", response=PublicProfile, errors=(404,))
def get_user(call: Call[Empty, Empty]) -> PublicProfile:
    """A user's public profile by username (letter case ignored)."""
    return accounts.lookup(call.path["username"])


@functions_framework.http
def users(request: flask.Request) -> flask.Response:
    return router.handle(request)
