"""The ``whatschat`` command: migrate, keys, dev (the local stack), gateway,
serve-function (a function container's server), serve-api, openapi.

This is the composition root: the only place in the shared package that
reaches into ``functions/`` and ``gateway/`` (lazily, per subcommand).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from whatschat.config import get_settings


def _migrate(args: argparse.Namespace) -> int:
    from whatschat.storage import migrations

    url = args.database_url or get_settings().database_url
    if not url:
        print("whatschat migrate: set DATABASE_URL or pass --database-url", file=sys.stderr)
        return 2
    applied = migrations.apply(url)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from whatschat import tokens

    for name, value in tokens.generate_key_pair(args.key_id).settings().items():
        print(f"{name}={value!r}")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from whatschat import local_stack

    return local_stack.run(ready_file=args.ready_file)


def _serve_api(args: argparse.Namespace) -> int:
    from whatschat import local_stack

    return local_stack.serve_api(args.host, args.port, threads=args.threads, workers=args.workers)


def _serve_function(args: argparse.Namespace) -> int:
    from whatschat import http_server

    if not (args.workers and args.threads and args.workers > 0 and args.threads > 0):
        print(
            "whatschat serve-function: set WORKERS and THREADS (or pass --workers and"
            " --threads) to whole numbers of at least 1",
            file=sys.stderr,
        )
        return 2
    app = http_server.function_app(args.target, args.source, args.signature_type)
    http_server.serve(
        app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        log_level=get_settings().log_level,
    )
    return 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.isdigit() else None


def _setup_bucket(args: argparse.Namespace) -> int:
    import orjson

    from whatschat.storage import objects

    done = objects.ensure_bucket()
    print(orjson.dumps({"name": get_settings().s3_bucket, **done}).decode())
    return 0


def _openapi(args: argparse.Namespace) -> int:
    from pathlib import Path

    from whatschat import openapi

    text = openapi.generate()
    output = Path(args.output) if args.output else openapi.DEFAULT_OUTPUT
    if args.check:
        if not output.exists() or output.read_text(encoding="utf-8") != text:
            print(f"{output} is out of date; run `whatschat openapi`", file=sys.stderr)
            return 1
        return 0
    output.write_text(text, encoding="utf-8")
    print(f"wrote {output}")
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from gateway import server

    code: int = server.main()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whatschat", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.add_argument("--database-url", default="", help="default: DATABASE_URL")
    migrate.set_defaults(run=_migrate)

    keys = commands.add_parser("keys", help="print a new Ed25519 token key pair as settings")
    keys.add_argument("--key-id", default=None)
    keys.set_defaults(run=_keys)

    dev = commands.add_parser("dev", help="run the whole system locally (make dev)")
    dev.add_argument("--ready-file", default="", help="write the stack's addresses here when up")
    dev.set_defaults(run=_dev)

    function = commands.add_parser(
        "serve-function", help="serve one function target (what a function container runs)"
    )
    function.add_argument("--target", required=True, help="the function's name in its module")
    function.add_argument("--source", required=True, help="the function's module file")
    function.add_argument("--signature-type", default="http", choices=("http", "cloudevent"))
    function.add_argument("--host", default="0.0.0.0")
    function.add_argument("--port", type=int, default=_env_int("PORT") or 8080)
    function.add_argument("--workers", type=int, default=_env_int("WORKERS"), help="processes")
    function.add_argument("--threads", type=int, default=_env_int("THREADS"), help="per process")
    function.set_defaults(run=_serve_function)

    serve = commands.add_parser("serve-api", help="serve every function on one port")
    serve.add_argument("--host", default=get_settings().api_host)
    serve.add_argument("--port", type=int, default=get_settings().api_port)
    serve.add_argument("--threads", type=int, default=16)
    serve.add_argument("--workers", type=int, default=1, help="processes")
    serve.set_defaults(run=_serve_api)

    bucket = commands.add_parser(
        "setup-bucket", help="create the files bucket with its CORS and lifecycle rules"
    )
    bucket.set_defaults(run=_setup_bucket)

    spec = commands.add_parser("openapi", help="write the OpenAPI document of every function")
    spec.add_argument("--output", default="", help="default: docs/openapi.json")
    spec.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    spec.set_defaults(run=_openapi)

    gw = commands.add_parser("gateway", help="run the WebSocket gateway")
    gw.set_defaults(run=_gateway)

    args = parser.parse_args(argv)
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
