"""POST /v1/auth/register: create an account and get tokens for its first device.

See docs/auth.md (endpoints).
"""

from __future__ import annotations

import flask
import functions_framework

from whatschat import accounts, passwords
from whatschat.accounts import AuthSession, Registration
from whatschat.api import Call, Empty, Reply, Router

router = Router("register")


@router.route(
    "POST",
    "/v1/auth/register",
    body=Registration,
    response=AuthSession,
    status=201,
    auth=False,
    errors=(409, 429),
)
def create_account(call: Call[Registration, Empty]) -> Reply:
    """Create an account; the response also logs the new user in (a token pair)."""
    return Reply(accounts.register(call.body, call.client_address), 201)


# The dummy hash is made at load, not by the first request (docs/auth.md, timing).
passwords.warm_up()


@functions_framework.http
def register(request: flask.Request) -> flask.Response:
    return router.handle(request)
