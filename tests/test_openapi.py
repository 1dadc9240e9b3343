"""The HTTP contract documents: docs/openapi.json and docs/errors.md agree with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from functions.routes import ROUTES
from whatschat import openapi
from whatschat.api import Call, Empty, Reply, Router
from whatschat.problems import CODES

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = ROOT / "functions"
ERRORS_DOC = ROOT / "docs" / "errors.md"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi.build(openapi.load_routers())


def test_committed_openapi_json_is_what_the_code_generates() -> None:
    committed = openapi.DEFAULT_OUTPUT.read_text(encoding="utf-8")
    assert committed == openapi.generate(), (
        "docs/openapi.json is out of date: run `.venv/bin/whatschat openapi` and commit it"
    )


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_of_every_function_is_documented(document: dict[str, Any]) -> None:
    for router in openapi.load_routers():
        for route in router.routes:
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.pattern)
            operation = document["paths"][path][route.method.lower()]
            assert operation["tags"] == [router.target]
            assert operation["summary"], f"{router.target}: give the operation a docstring"
            assert ("bearer" in str(operation["security"])) == route.auth


def test_auth_operations_are_in_the_document(document: dict[str, Any]) -> None:
    paths = document["paths"]
    login = paths["/v1/auth/login"]["post"]
    assert login["security"] == []
    assert login["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Credentials"
    }
    assert {"200", "400", "401", "413", "415", "422", "429", "503"} <= set(login["responses"])
    assert set(paths["/v1/me"]) == {"get", "patch"}
    assert paths["/v1/me"]["get"]["security"] == [{"bearer": []}]
    assert "201" in paths["/v1/auth/register"]["post"]["responses"]
    assert "content" not in paths["/v1/auth/logout"]["post"]["responses"]["204"]
    session = document["components"]["schemas"]["AuthSession"]
    assert set(session["required"]) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "user",
    }
    problem = document["components"]["responses"]["Problem429"]
    assert "application/problem+json" in problem["content"]
    assert "Retry-After" in problem["headers"]
    assert document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"] == sorted(
        CODES
    )


class Item(BaseModel):
    name: str


class Page(BaseModel):
    limit: int = 10


def test_path_and_query_parameters_and_defaults() -> None:
    router = Router("items")

    @router.route("GET", "/v1/items/{item_id:int}", query=Page, response=Item)
    def get_item(call: Call[Empty, Page]) -> Item:
        """Get one item.

        A longer description.
        """
        return Item(name="x")

    @router.route("PUT", "/v1/items/{key:uuid}", body=Item, status=204, auth=False)
    def put_item(call: Call[Item, Empty]) -> Reply:
        return Reply(None, 204)

    document = openapi.build([router])
    validate(document)
    get = document["paths"]["/v1/items/{item_id}"]["get"]
    assert get["description"] == "A longer description."
    assert get["parameters"] == [
        {"name": "item_id", "in": "path", "required": True,
         "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"default": 10, "title": "Limit", "type": "integer"}},
    ]  # fmt: skip
    assert set(get["responses"]) == {"200", "401", "404", "422", "429", "503"}
    put = document["paths"]["/v1/items/{key}"]["put"]
    assert put["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert set(put["responses"]) == {"204", "400", "404", "413", "415", "422", "503"}


def test_operation_names_must_be_unique_across_functions() -> None:
    first, second = Router("first"), Router("second")
    for router, path in ((first, "/a"), (second, "/b")):

        @router.route("GET", path, auth=False)
        def fetch(call: Call[Empty, Empty]) -> Reply:
            return Reply({})

    with pytest.raises(ValueError, match="operationId"):
        openapi.build([first, second])


def test_every_public_http_target_has_a_module() -> None:
    """Every public HTTP function in functions/routes.py exists as functions/<target>.py.

    While the messaging and files functions are being written this lists the
    missing ones; docs/openapi.json leaves them out until they exist.
    """
    missing = [
        route.target
        for route in ROUTES
        if route.public
        and route.signature == "http"
        and not (FUNCTIONS_DIR / f"{route.target}.py").exists()
    ]
    assert missing == [], f"routes.py names functions without a module: {missing}"


def _documented_codes() -> dict[str, int]:
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| (\d{3}) \|", ERRORS_DOC.read_text(), re.MULTILINE)
    documented: dict[str, int] = {}
    for code, status in rows:
        assert code not in documented, f"docs/errors.md lists {code} twice"
        documented[code] = int(status)
    return documented


def test_errors_doc_lists_exactly_the_problem_codes() -> None:
    documented = _documented_codes()
    missing = sorted(set(CODES) - set(documented))
    unknown = sorted(set(documented) - set(CODES))
    assert not missing, f"add these codes to docs/errors.md: {missing}"
    assert not unknown, f"docs/errors.md lists codes that problems.CODES lacks: {unknown}"
    wrong = {code: status for code, status in documented.items() if CODES[code][0] != status}
    assert not wrong, f"docs/errors.md has the wrong status for {wrong}"
