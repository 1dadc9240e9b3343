"""POST /v1/auth/login: exchange username and password for an access and a refresh token.

See docs/auth.md (endpoints, throttling).
"""

from __future__ import annotations

import flask
import functions_framework

from whatschat import accounts, passwords
from whatschat.accounts import AuthSession, Credentials
from whatschat.api import Call, Empty, Router

router = Router("login")


@router.route(
    "POST",
    "/v1/auth/login",
    body=Credentials,
    response=AuthSession,
    auth=False,
    errors=(401, 429),
)
def log_in(call: Call[Credentials, Empty]) -> AuthSession:
    """Log in; failed attempts are throttled per username and per client address."""
    return accounts.login(call.body, call.client_address)


# Unknown usernames verify against a dummy hash; make it at load so the first
# such request takes no longer than a wrong password does (docs/auth.md, timing).
passwords.warm_up()


@functions_framework.http
def login(request: flask.Request) -> flask.Response:
    return router.handle(request)
