"""POST /v1/auth/logout: end the session (refresh family) of the device holding the token.

See docs/auth.md (sessions).
"""

from __future__ import annotations

import flask
import functions_framework

from whatschat import sessions
from whatschat.api import Call, Empty, Reply, Router
from whatschat.sessions import RefreshTokenBody

router = Router("logout")


@router.route("POST", "/v1/auth/logout", body=RefreshTokenBody, status=204, auth=False)
def log_out(call: Call[RefreshTokenBody, Empty]) -> Reply:
    """Revoke the device's refresh tokens; 204 even if the token was already invalid."""
    sessions.end(call.body.refresh_token)
    return Reply(None, 204)


@functions_framework.http
def logout(request: flask.Request) -> flask.Response:
    return router.handle(request)
