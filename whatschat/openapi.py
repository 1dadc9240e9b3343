"""The OpenAPI 3.1 document of the HTTP API, generated from the functions' routes.

Every public HTTP target in functions/routes.py has a module with a module-level
``router`` (:class:`whatschat.api.Router`); each route's pydantic models become
``components.schemas`` and every error is the ``Problem`` schema served as
``application/problem+json``. ``whatschat openapi`` writes docs/openapi.json,
and a test fails when the committed file differs from what this generates.
Like cli.py, this module reads the routing table lazily: it is the one other
place in the package that looks at functions/. The Problem codes are
documented in docs/errors.md; docs/auth.md (OpenAPI) says how to regenerate.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from whatschat.api import Route, Router
from whatschat.problems import CODES, PROBLEM_CONTENT_TYPE

OPENAPI_VERSION = "3.1.0"
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
REF = "#/components/schemas/{model}"

# Problems the HTTP adapter itself may answer with, by what a route takes.
_BODY_ERRORS = (400, 413, 415, 422)
_QUERY_ERRORS = (422,)
_AUTH_ERRORS = (401, 429)  # bad token; the per-user request limit
_PATH_PARAM_ERRORS = (404,)  # a path parameter of the wrong form matches no operation
_ALWAYS_ERRORS = (503,)  # PostgreSQL, Redis or S3 unreachable
_RETRY_AFTER = (429, 503)

_TYPED_PARAM = re.compile(r"\{(\w+):\w+\}")
_PARAM_SCHEMAS: dict[str | None, dict[str, Any]] = {
    None: {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": (
        "An RFC 9457 problem. `code` is stable and listed in docs/errors.md; `type` is"
        " `/problems/<code>`. Further members may appear (e.g. `allowed` on 405)."
    ),
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "examples": ["/problems/not-found"]},
        "title": {"type": "string", "description": "The same for every problem of this code"},
        "status": {"type": "integer", "description": "The HTTP status"},
        "code": {"type": "string", "enum": sorted(CODES)},
        "detail": {"type": "string", "description": "This occurrence, for people"},
        "errors": {
            "type": "array",
            "description": "validation-failed: one entry per offending field",
            "items": {"$ref": REF.format(model="FieldError")},
        },
        "retry_after": {
            "type": "integer",
            "minimum": 1,
            "description": "429 and 503: seconds to wait, as in the Retry-After header",
        },
    },
    "additionalProperties": True,
}

_FIELD_ERROR_SCHEMA: dict[str, Any] = {
    "title": "FieldError",
    "type": "object",
    "required": ["field", "message", "type"],
    "properties": {
        "field": {"type": "string", "description": "Dotted path of the field ('' = the body)"},
        "message": {"type": "string"},
        "type": {"type": "string", "description": "Machine-readable kind, e.g. string_too_short"},
    },
}


def load_routers() -> list[Router]:
    """The ``router`` of every public HTTP target of functions/routes.py that has a module.

    Targets still without a module are left out (tests/test_openapi.py lists them).
    """
    from functions.routes import ROUTES

    folder = Path(importlib.import_module("functions").__path__[0])
    routers: list[Router] = []
    for route in ROUTES:
        if route.signature != "http" or not route.public:
            continue
        if not (folder / f"{route.target}.py").exists():
            continue
        module = importlib.import_module(f"functions.{route.target}")
        router = getattr(module, "router", None)
        if not isinstance(router, Router):
            raise TypeError(f"functions/{route.target}.py has no module-level `router`")
        routers.append(router)
    return routers


def _tag(router: Router) -> dict[str, str]:
    """A tag per function, described by the first paragraph of its module's docstring."""
    modules = {inspect.getmodule(route.operation) for route in router.routes}
    docs = [inspect.getdoc(module) or "" for module in modules if module is not None]
    first = docs[0].split("\n\n")[0].replace("\n", " ") if len(docs) == 1 else ""
    return {"name": router.target, "description": first or f"The {router.target} function"}


def build(routers: Sequence[Router]) -> dict[str, Any]:
    """The OpenAPI document (a JSON-ready dict) of these routers' routes."""
    routes = [(router.target, route) for router in routers for route in router.routes]
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for _, route in routes:
        if route.body is not None:
            models.append((route.body, "validation"))
        if route.query is not None:
            models.append((route.query, "validation"))
        if route.response is not None:
            models.append((route.response, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(models)), ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Problem"] = _PROBLEM_SCHEMA
    schemas["FieldError"] = _FIELD_ERROR_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    operation_ids: dict[str, str] = {}
    statuses: set[int] = set()
    for target, route in routes:
        path = _TYPED_PARAM.sub(r"{\1}", route.pattern)  # {id:int} -> {id}
        method = route.method.lower()
        if method in paths.get(path, {}):
            raise ValueError(f"{route.method} {path} is served by two functions")
        op_id = route.operation.__name__
        if op_id in operation_ids:
            raise ValueError(
                f"operation name {op_id!r} is used by {operation_ids[op_id]} and {target}; "
                "operation functions need names unique across functions (operationId)"
            )
        operation_ids[op_id] = target
        operation, errors = _operation(target, route, refs, schemas)
        statuses.update(errors)
        paths.setdefault(path, {})[method] = operation

    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "WhatsChat Serverless API",
            "version": importlib.metadata.version("whatschat"),
            "description": (
                "Each tag is one function (its own Knative Service). Errors are RFC 9457"
                " problems (docs/errors.md); realtime events come over the gateway's"
                " WebSocket (docs/gateway.md)."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {_problem_response_name(s): _problem_response(s) for s in statuses},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Access token from /v1/auth/login, /register or /refresh",
                }
            },
        },
        "tags": [_tag(router) for router in routers],
    }
    return document


def _operation(
    target: str,
    route: Route,
    refs: Mapping[Any, dict[str, Any]],
    schemas: dict[str, Any],
) -> tuple[dict[str, Any], set[int]]:
    doc = inspect.getdoc(route.operation) or ""
    operation: dict[str, Any] = {
        "operationId": route.operation.__name__,
        "tags": [target],
        "summary": route.summary,
    }
    description = doc.split("\n\n", 1)[1].strip() if "\n\n" in doc else ""
    if description:
        operation["description"] = description
    errors = set(route.errors) | set(_ALWAYS_ERRORS)
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PARAM_SCHEMAS[kind],
        }
        for name, kind in route.converters.items()
    ]
    if route.converters:
        errors.update(_PATH_PARAM_ERRORS)
    if route.query is not None:
        errors.update(_QUERY_ERRORS)
        query = schemas[_ref_name(refs[(route.query, "validation")])]
        required = set(query.get("required", ()))
        for name, schema in query.get("properties", {}).items():
            parameter = {"name": name, "in": "query", "required": name in required}
            parameter["schema"] = schema
            if "description" in schema:
                parameter["description"] = schema["description"]
            parameters.append(parameter)
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        errors.update(_BODY_ERRORS)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    if route.auth:
        errors.update(_AUTH_ERRORS)
        operation["security"] = [{"bearer": []}]
    else:
        operation["security"] = []
    success: dict[str, Any] = {"description": _success_description(route.status)}
    if route.response is not None and route.status != 204:
        success["content"] = {
            "application/json": {"schema": refs[(route.response, "serialization")]}
        }
    responses: dict[str, Any] = {str(route.status): success}
    for status, when in route.also:
        other: dict[str, Any] = {"description": when}
        if route.response is not None and status not in (204, 301, 302, 303, 307):
            other["content"] = success.get("content", {})
        responses[str(status)] = other
    for status in sorted(errors):
        responses[str(status)] = {
            "$ref": f"#/components/responses/{_problem_response_name(status)}"
        }
    operation["responses"] = responses
    return operation, errors


def _ref_name(ref: dict[str, Any]) -> str:
    return str(ref["$ref"]).rsplit("/", 1)[1]


def _success_description(status: int) -> str:
    return {200: "OK", 201: "Created", 202: "Accepted", 204: "No content"}.get(status, "Success")


def _problem_response_name(status: int) -> str:
    return f"Problem{status}"


def _problem_response(status: int) -> dict[str, Any]:
    codes = sorted(code for code, (code_status, _) in CODES.items() if code_status == status)
    titles = "; ".join(f"`{code}`: {CODES[code][1]}" for code in codes)
    response: dict[str, Any] = {
        "description": titles or f"HTTP {status}",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": REF.format(model="Problem")}}},
    }
    if status in _RETRY_AFTER:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    if status == 401:
        response.setdefault("headers", {})["WWW-Authenticate"] = {
            "description": 'Bearer realm="whatschat"',
            "schema": {"type": "string"},
        }
    return response


def render(document: dict[str, Any]) -> str:
    """The document as stable JSON text: sorted keys, 2-space indent, final newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate(routers: Iterable[Router] | None = None) -> str:
    """The text of docs/openapi.json for the current code."""
    return render(build(list(routers) if routers is not None else load_routers()))
