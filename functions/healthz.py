"""GET /healthz: each dependency (PostgreSQL, Redis, S3) ok or failing; 200 only if all ok."""

from __future__ import annotations

import flask
import functions_framework
from pydantic import BaseModel

from whatschat import health
from whatschat.api import Call, Empty, Reply, Router


class HealthReport(BaseModel):
    status: str  # "ok" or "failing"
    dependencies: dict[str, str]  # name -> "ok" | "failing: <reason>"


router = Router("healthz")


@router.route("GET", "/healthz", auth=False, response=HealthReport, errors=(503,))
def check_health(call: Call[Empty, Empty]) -> Reply:
    """Report whether PostgreSQL, Redis and S3 answer."""
    dependencies = health.check()
    ok = all(state == "ok" for state in dependencies.values())
    report = HealthReport(status="ok" if ok else "failing", dependencies=dependencies)
    return Reply(report, 200 if ok else 503)


@functions_framework.http
def healthz(request: flask.Request) -> flask.Response:
    return router.handle(request)
