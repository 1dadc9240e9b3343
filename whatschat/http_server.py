"""The HTTP server of every function: granian serving the functions-framework app.

A function container runs ``whatschat serve-function`` (container/entrypoint.sh).
functions-framework builds the function's WSGI app exactly as its own CLI
would (``create_app``: the target, its source file, its signature type);
granian serves it. granian parses HTTP/1.1 in Rust, on its own threads, and
calls the app on ``threads`` Python threads in each of ``workers`` processes.
functions-framework's CLI serves with gunicorn's threaded worker instead,
whose pure-Python HTTP handling and thread hand-offs cost about 0.3 ms of CPU
per request: a third of a send (docs/operations.md, "The function server").
``whatschat serve-api`` (every function on one port, for ``make dev`` and the
benchmarks) runs the same server.

granian starts each request's WSGI environ from a copy of the process
environment (CGI style): every setting and secret, and any variable named
like a header (``HTTP_*``), would look like part of the request to the
function (and to anything that records a request's environ).
:func:`_request_only` takes them out again, so a request carries only
itself.

The app is loaded before the port is bound, so an open port means the
function is loaded (the TCP readiness probe relies on it) and an import error
exits before anything listens. The workers are then forked with the app in
them; the fork start method is set explicitly, so it does not depend on the
Python version's default.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The app a forked worker serves, and the server process that forked it
# (set by serve() before the fork; in a container the server is PID 1).
_app: WSGIApp | None = None
_server_pid = 0


def function_app(target: str, source: str, signature_type: str = "http") -> WSGIApp:
    """One function's app, built by functions-framework as its CLI builds it."""
    import functions_framework

    app: WSGIApp = functions_framework.create_app(  # type: ignore[no-untyped-call]
        target=target, source=source, signature_type=signature_type
    )
    return app


# WSGI keys granian always fills from the request itself (or with its own
# values), so the process environment never shows through them.
_FROM_SERVER = frozenset(
    {
        "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
        "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "GATEWAY_INTERFACE", "SERVER_SOFTWARE",
    }
)  # fmt: skip


def _request_only(app: WSGIApp) -> WSGIApp:
    """``app`` called with the process environment's variables removed from
    each request's environ. A variable is removed when the environ still holds
    its value: a request header of the same name with another value stays."""
    inherited = tuple((k, v) for k, v in os.environ.items() if k not in _FROM_SERVER)

    def serve_request(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        for key, value in inherited:
            if environ.get(key) == value:
                del environ[key]
        return app(environ, start_response)

    return serve_request


def _loaded_app() -> WSGIApp:
    """granian's factory, called in each worker: the app serve() loaded."""
    if _app is None:  # pragma: no cover - serve() sets it before forking
        raise RuntimeError("no app loaded: start the server with whatschat.http_server.serve")
    _die_with_parent()
    return _app


def _die_with_parent() -> None:
    """Have the kernel SIGTERM this worker when the server process dies.

    A server stopped by SIGTERM stops its workers itself; one killed outright
    (SIGKILL, a crash) cannot, and its workers would live on holding the
    function's connections. In a container the runtime kills them all with
    PID 1; elsewhere (``make dev``, the benchmarks, the tests) this does.
    Linux only; elsewhere a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("could not tie the worker to its server: errno %d", ctypes.get_errno())
        return
    if os.getppid() != _server_pid:  # the server died before the tie was made
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def serve(
    app: WSGIApp,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    log_level: str = "info",
) -> None:
    """Serve ``app`` on ``host:port`` with ``workers`` processes x ``threads``
    threads until SIGTERM or SIGINT (in-flight requests finish first)."""
    global _app, _server_pid
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server import Server

    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    _app = _request_only(app)
    _server_pid = os.getpid()
    multiprocessing.set_start_method("fork", force=True)
    server = Server(
        f"{__name__}:{_loaded_app.__name__}",
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        http=HTTPModes.http1,  # Knative's queue-proxy speaks HTTP/1.1 to the container
        websockets=False,  # WSGI has none (granian would log that it ignores them)
        workers=workers,
        blocking_threads=threads,
        factory=True,
        log_level=LogLevels(log_level.lower()),
    )
    # granian advises against more threads than twice the CPU count; ours
    # are chosen per function (knative/scaling.yaml, where Knative's
    # containerConcurrency matches them), so the advice is only noise in
    # every pod's and `make dev`'s log.
    logging.getLogger("_granian").addFilter(_drop_thread_advice)
    server.serve()


def _drop_thread_advice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Configuration allows spawning up to")
