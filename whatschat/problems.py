"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error a client can see is a :class:`Problem` with a stable ``code``;
``type`` is ``/problems/<code>`` and each code is listed in docs/errors.md.
Domain code raises the named constructors below; the HTTP adapter
(:mod:`whatschat.api`) and the gateway render them.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"

# code -> (HTTP status, title). The single list of error kinds; docs/errors.md
# documents each and a test checks the two agree.
CODES: dict[str, tuple[int, str]] = {
    "malformed-request": (400, "The request body is not valid JSON"),
    "unauthorized": (401, "Missing or invalid access token"),
    "invalid-credentials": (401, "Wrong username or password"),
    "invalid-refresh-token": (401, "The refresh token is invalid, expired or revoked"),
    "forbidden": (403, "You are not allowed to do this"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "conflict": (409, "Conflict"),
    "username-taken": (409, "That username is taken"),
    "payload-too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "Send the body as application/json"),
    "validation-failed": (422, "The request is not valid"),
    "rate-limited": (429, "Too many requests"),
    # files (docs/files.md)
    "file-too-large": (413, "The file is larger than allowed"),
    "file-type-not-allowed": (415, "That file type is not allowed"),
    "upload-mismatch": (422, "The uploaded file does not match what was declared"),
    "attachment-gone": (410, "The file is no longer stored"),
    "internal-error": (500, "Internal error"),
    "service-unavailable": (503, "A dependency is unavailable; retry later"),
}


class DependencyUnavailable(Exception):
    """PostgreSQL, Redis or S3 could not be reached in time: the caller gets 503."""

    dependency = "A dependency"  # named in the problem's detail


class Problem(Exception):
    """An error for the client: raise it anywhere below a function or the gateway."""

    def __init__(
        self,
        code: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        retry_after: int | None = None,
        status: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if code not in CODES:
            raise ValueError(f"unknown problem code {code!r}; add it to CODES and docs/errors.md")
        default_status, title = CODES[code]
        super().__init__(detail or title)
        self.code = code  # stable machine-readable kind, also in the body
        self.status = status or default_status  # HTTP status
        self.title = title  # short human summary, same for every instance of the code
        self.detail = detail  # this occurrence, human readable
        self.errors = errors  # per-field validation errors
        self.retry_after = retry_after  # seconds, for 429 and 503
        self.extra = extra or {}  # further members for the body

    def body(self) -> dict[str, Any]:
        """The JSON object of the problem response."""
        doc: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "code": self.code,
        }
        if self.detail:
            doc["detail"] = self.detail
        if self.errors is not None:
            doc["errors"] = self.errors
        if self.retry_after is not None:
            doc["retry_after"] = self.retry_after
        doc.update(self.extra)
        return doc

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers (Retry-After)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


def not_found(what: str = "Not found") -> Problem:
    return Problem("not-found", what)


def unavailable(dependency: str, retry_after: int = 2) -> Problem:
    return Problem(
        "service-unavailable", f"{dependency} is unavailable; retry later", retry_after=retry_after
    )


def rate_limited(retry_after: int, detail: str = "Too many requests") -> Problem:
    return Problem("rate-limited", detail, retry_after=max(1, retry_after))
