"""The HTTP adapter every function uses: route, parse, authenticate, respond.

A function module builds a :class:`Router`, registers its operations with
:meth:`Router.route`, and its ``functions-framework`` target returns
``router.handle(request)``. The router turns every failure into an RFC 9457
problem response (see :mod:`whatschat.problems`): bad JSON 400, bad token 401,
unknown path 404, wrong method 405, oversized body 413, wrong content type 415,
invalid fields 422, too many requests 429, a dependency down 503 — never a
500 for bad input.

Every authenticated operation counts against a per-user, per-function request
limit (``API_RATE_LIMIT`` per ``API_RATE_WINDOW_SECONDS``; fails open when
Redis is down) unless its route brings a limit of its own (``own_rate_limit``,
e.g. send's per-user send limit).

The routes' pydantic models are also the source of docs/openapi.json
(:mod:`whatschat.openapi`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import flask
import orjson
from pydantic import BaseModel, ValidationError

from whatschat import ratelimit, tokens
from whatschat.config import get_settings
from whatschat.problems import (
    PROBLEM_CONTENT_TYPE,
    DependencyUnavailable,
    Problem,
    rate_limited,
)

logger = logging.getLogger(__name__)

BodyT = TypeVar("BodyT", bound=BaseModel)
QueryT = TypeVar("QueryT", bound=BaseModel)

_PARAM = re.compile(r"\{(\w+)(?::(int|uuid))?\}")
_PARAM_PATTERNS = {None: r"[^/]+", "int": r"[0-9]{1,18}", "uuid": r"[0-9a-fA-F-]{36}"}


class Empty(BaseModel):
    """No body or no query parameters."""


@dataclass
class Call(Generic[BodyT, QueryT]):
    """One parsed request, handed to an operation."""

    request: flask.Request  # the raw request, for headers such as X-Forwarded-For
    body: BodyT  # the validated JSON body (Empty when the route takes none)
    query: QueryT  # the validated query parameters
    path: dict[str, Any]  # path parameters, converted ({id:int} -> int)
    claims: tokens.AccessClaims | None  # the caller, when the route requires auth

    @property
    def user_id(self) -> int:
        """The authenticated caller; only for routes registered with auth=True."""
        assert self.claims is not None, "route registered without auth"
        return self.claims.user_id

    @property
    def client_address(self) -> str:
        """The client's IP, for per-address limits.

        With ``TRUSTED_PROXY_HOPS=0`` (default) the TCP peer. Behind N proxies
        that each append to X-Forwarded-For, the N-th entry from the right: the
        address our own outermost proxy saw. Entries further left are chosen by
        the client and never trusted.
        """
        hops = get_settings().trusted_proxy_hops
        peer = self.request.remote_addr or "unknown"
        if hops == 0:
            return peer
        entries = [e.strip() for e in self.request.headers.get("X-Forwarded-For", "").split(",")]
        entries = [e for e in entries if e]
        return entries[-hops] if len(entries) >= hops else (entries[0] if entries else peer)


@dataclass
class Reply:
    """What an operation returns: a model (or plain JSON data), a status, headers."""

    body: BaseModel | Mapping[str, Any] | list[Any] | None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


Operation = Callable[[Call[Any, Any]], Reply | BaseModel]


@dataclass
class Route:
    """One operation of a function: method + path pattern, models, docs."""

    method: str
    pattern: str  # e.g. /v1/groups/{group_id:int}/members
    operation: Operation
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    auth: bool
    summary: str
    errors: tuple[int, ...]  # HTTP statuses of documented problem responses
    # Other success statuses the operation may answer with, and when
    # (e.g. 200 for a retried send); documented in OpenAPI with the same model.
    also: tuple[tuple[int, str], ...] = ()
    # True when the operation enforces a rate limit of its own (the generic
    # per-user request limit is then skipped).
    own_rate_limit: bool = False
    regex: re.Pattern[str] = field(init=False)
    converters: dict[str, str | None] = field(init=False)

    def __post_init__(self) -> None:
        self.converters = {}
        parts: list[str] = []
        last = 0
        for match in _PARAM.finditer(self.pattern):
            parts.append(re.escape(self.pattern[last : match.start()]))
            name, kind = match.group(1), match.group(2)
            self.converters[name] = kind
            parts.append(f"(?P<{name}>{_PARAM_PATTERNS[kind]})")
            last = match.end()
        parts.append(re.escape(self.pattern[last:]))
        self.regex = re.compile("".join(parts) + "/?")

    def match(self, path: str) -> dict[str, Any] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        params: dict[str, Any] = {}
        for name, raw in found.groupdict().items():
            kind = self.converters[name]
            try:
                params[name] = (
                    int(raw) if kind == "int" else uuid.UUID(raw) if kind == "uuid" else raw
                )
            except ValueError:
                return None
        return params


class Router:
    """The operations of one function target."""

    def __init__(self, target: str) -> None:
        self.target = target  # the function target (file and Knative Service name)
        self.routes: list[Route] = []  # in registration order; first match wins

    def route(
        self,
        method: str,
        pattern: str,
        *,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        auth: bool = True,
        summary: str = "",
        errors: tuple[int, ...] = (),
        also: tuple[tuple[int, str], ...] = (),
        own_rate_limit: bool = False,
    ) -> Callable[[Operation], Operation]:
        """Register an operation. Documented errors always include 400/413/415/422/503
        (and 401 for authenticated routes)."""

        def register(operation: Operation) -> Operation:
            self.routes.append(
                Route(
                    method=method.upper(),
                    pattern=pattern,
                    operation=operation,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    auth=auth,
                    summary=summary or (operation.__doc__ or "").strip().split("\n")[0],
                    errors=errors,
                    also=also,
                    own_rate_limit=own_rate_limit,
                )
            )
            return operation

        return register

    def handle(self, request: flask.Request) -> flask.Response:
        """Answer one request; never raises."""
        try:
            return self._dispatch(request)
        except Problem as problem:
            return problem_response(problem)
        except DependencyUnavailable as exc:
            logger.warning("%s unavailable: %s", exc.dependency, exc)
            return problem_response(
                Problem(
                    "service-unavailable",
                    f"{exc.dependency} is unavailable; retry later",
                    retry_after=2,
                )
            )
        except Exception:
            logger.exception("unhandled error in %s %s", request.method, request.path)
            return problem_response(Problem("internal-error"))

    def _dispatch(self, request: flask.Request) -> flask.Response:
        path_matched = False
        for route in self.routes:
            params = route.match(request.path)
            if params is None:
                continue
            path_matched = True
            if route.method != request.method and not (
                route.method == "GET" and request.method == "HEAD"
            ):
                continue
            claims = _authenticate(request) if route.auth else None
            if claims is not None and not route.own_rate_limit:
                self._count_request(claims.user_id)
            call: Call[Any, Any] = Call(
                request=request,
                body=_parse_body(request, route.body) if route.body else Empty(),
                query=_parse_query(request, route.query) if route.query else Empty(),
                path=params,
                claims=claims,
            )
            result = route.operation(call)
            reply = result if isinstance(result, Reply) else Reply(result, route.status)
            return json_response(reply.body, reply.status, reply.headers)
        if path_matched:
            allowed = sorted({r.method for r in self.routes if r.match(request.path) is not None})
            raise Problem(
                "method-not-allowed",
                f"{request.method} is not allowed here; use {', '.join(allowed)}",
                extra={"allowed": allowed},
            )
        raise Problem("not-found", f"No operation at {request.path}")

    def _count_request(self, user_id: int) -> None:
        """The generic per-user limit of this function's operations (fails open)."""
        settings = get_settings()
        limit = ratelimit.Limit(
            f"api-{self.target}", settings.api_rate_limit, settings.api_rate_window_seconds
        )
        decision = ratelimit.hit(limit, str(user_id), fail_open=True)
        if not decision.allowed:
            raise rate_limited(decision.retry_after, "Too many requests; slow down")


def _authenticate(request: flask.Request) -> tokens.AccessClaims:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem("unauthorized", "Send 'Authorization: Bearer <access token>'")
    try:
        return tokens.verify_access_token(token.strip())
    except tokens.InvalidToken as exc:
        raise Problem("unauthorized", f"Invalid access token: {exc}") from exc


def read_json(request: flask.Request) -> Any:
    """The request's JSON body within the size limit, or a Problem (400/413/415)."""
    limit = get_settings().max_request_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem("payload-too-large", f"The body may be at most {limit} bytes")
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise Problem("unsupported-media-type", "Send the body with Content-Type: application/json")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise Problem("payload-too-large", f"The body may be at most {limit} bytes")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Problem("malformed-request", f"The body is not valid JSON: {exc}") from exc


def _parse_body(request: flask.Request, model: type[BodyT]) -> BodyT:
    data = read_json(request)
    if not isinstance(data, dict):
        raise Problem(
            "validation-failed",
            "The body must be a JSON object",
            errors=[{"field": "", "message": "must be a JSON object", "type": "object_type"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def _parse_query(request: flask.Request, model: type[QueryT]) -> QueryT:
    try:
        return model.model_validate(request.args.to_dict())
    except ValidationError as exc:
        raise validation_problem(exc) from exc


def validation_problem(exc: ValidationError) -> Problem:
    """A 422 listing each offending field (dotted path), its message and error type."""
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]),
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return Problem("validation-failed", "Some fields are not valid", errors=errors)


def json_response(
    body: BaseModel | Mapping[str, Any] | list[Any] | None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> flask.Response:
    """Encode a model or JSON data with orjson."""
    if body is None:
        payload = b""
    elif isinstance(body, BaseModel):
        payload = body.__pydantic_serializer__.to_json(body, by_alias=True)
    else:
        payload = orjson.dumps(body)
    response = flask.Response(
        payload, status=status, mimetype="application/json" if payload else None
    )
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def problem_response(problem: Problem) -> flask.Response:
    """A problem rendered as ``application/problem+json``."""
    response = flask.Response(orjson.dumps(problem.body()), status=problem.status)
    response.headers["Content-Type"] = PROBLEM_CONTENT_TYPE
    response.headers["Cache-Control"] = "no-store"
    if problem.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="whatschat"'
    for name, value in problem.headers().items():
        response.headers[name] = value
    return response
