"""Every function behind one HTTP port, routed like the production ingress.

``whatschat dev`` serves this WSGI app. Each function is loaded through
functions-framework's own loading path (``create_app``) the first time a
request reaches it, exactly as its container would load it. Besides the
functions it serves ``/openapi.json`` and the reference web client under
``/app/`` (when present).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.wrappers import Request, Response

from functions.routes import ROUTES, FunctionRoute, find
from whatschat import http_server
from whatschat.api import problem_response
from whatschat.http_server import WSGIApp
from whatschat.problems import Problem

FUNCTIONS_DIR = Path(__file__).resolve().parent


def function_app(route: FunctionRoute) -> WSGIApp:
    """The functions-framework app of one target, as its container builds it."""
    return http_server.function_app(
        route.target, str(FUNCTIONS_DIR / f"{route.target}.py"), route.signature
    )


class LocalIngress:
    """A WSGI app dispatching each path to its function's app."""

    def __init__(self, extra: dict[str, WSGIApp] | None = None) -> None:
        self._apps: dict[str, WSGIApp] = {}  # target -> loaded function app
        self._lock = threading.Lock()  # loading a function module is not re-entrant
        self._extra = extra or {}  # exact path or "/prefix/" -> app (openapi.json, web client)

    def load_all(self) -> None:
        """Load every public function now (fail fast at startup instead of on first call)."""
        for route in ROUTES:
            if route.public:
                self._app_for(route)

    def _app_for(self, route: FunctionRoute) -> WSGIApp:
        with self._lock:
            app = self._apps.get(route.target)
            if app is None:
                app = self._apps[route.target] = function_app(route)
            return app

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        for key, app in self._extra.items():
            if path == key or (key.endswith("/") and path.startswith(key)):
                return app(environ, start_response)
        route = find(path)
        if route is None:
            response: Response = problem_response(
                Problem("not-found", f"No function serves {path}")
            )
            return response(environ, start_response)
        return self._app_for(route)(environ, start_response)


def static_files(folder: Path, mount: str) -> WSGIApp:
    """Serve files of ``folder`` under the path prefix ``mount`` (the web client)."""
    from werkzeug.utils import send_from_directory

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        name = request.path[len(mount) :] or "index.html"
        try:
            response = send_from_directory(folder, name, environ)
        except Exception:  # werkzeug raises NotFound for missing or unsafe names
            response = problem_response(Problem("not-found", f"No file {request.path}"))
        return response(environ, start_response)

    return app
