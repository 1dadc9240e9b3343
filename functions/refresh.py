"""POST /v1/auth/refresh: exchange a refresh token (once) for new tokens.

See docs/auth.md (sessions: rotation and reuse detection).
"""

from __future__ import annotations

import flask
import functions_framework

from whatschat import accounts
from whatschat.accounts import AuthSession
from whatschat.api import Call, Empty, Router
from whatschat.sessions import RefreshTokenBody

router = Router("refresh")


@router.route(
    "POST",
    "/v1/auth/refresh",
    body=RefreshTokenBody,
    response=AuthSession,
    auth=False,
    errors=(401,),
)
def refresh_session(call: Call[RefreshTokenBody, Empty]) -> AuthSession:
    """Rotate the refresh token; presenting an already used one ends the session (401)."""
    return accounts.refresh(call.body.refresh_token)


@functions_framework.http
def refresh(request: flask.Request) -> flask.Response:
    return router.handle(request)
