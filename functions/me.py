"""GET and PATCH /v1/me: the caller's own profile. See docs/auth.md (endpoints)."""

from __future__ import annotations

import flask
import functions_framework

from whatschat import accounts
from whatschat.accounts import OwnProfile, ProfileUpdate
from whatschat.api import Call, Empty, Router

router = Router("me")


@router.route("GET", "/v1/me", response=OwnProfile, errors=(404,))
def get_own_profile(call: Call[Empty, Empty]) -> OwnProfile:
    """Your profile."""
    return accounts.own_profile(call.user_id)


@router.route("PATCH", "/v1/me", body=ProfileUpdate, response=OwnProfile, errors=(404,))
def update_own_profile(call: Call[ProfileUpdate, Empty]) -> OwnProfile:
    """Change your display name."""
    return accounts.update_profile(call.user_id, call.body)


@functions_framework.http
def me(request: flask.Request) -> flask.Response:
    return router.handle(request)
