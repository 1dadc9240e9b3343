"""``whatschat dev``: the whole system on one machine, no Docker.

Starts (or reuses, when their settings are given) PostgreSQL, Redis and S3,
generates a token key pair once, applies migrations, creates the bucket, then
runs the API (every function on one port) and the gateway as child processes
and fires the internal functions (outbox and orphan sweepers) on timers, as
the cluster's PingSources would. SIGINT/SIGTERM stop everything.
See docs/local-development.md.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from whatschat.config import Settings, child_environment, get_settings

logger = logging.getLogger("whatschat.dev")

# Internal CloudEvent functions and how often the local stack fires them (seconds).
TIMERS = {"outbox_sweeper": 2.0, "orphan_sweeper": 60.0}


def _keys(folder: Path) -> dict[str, str]:
    """The local token key pair, generated on first run and kept in the data folder."""
    from whatschat import tokens

    folder.mkdir(parents=True, exist_ok=True)
    stored = folder / "token-keys.json"
    if not stored.exists():
        pair = tokens.generate_key_pair()
        stored.write_text(
            json.dumps({"kid": pair.key_id, "private": pair.private_pem, "public": pair.public_pem})
        )
        stored.chmod(0o600)
    data = json.loads(stored.read_text())
    return tokens.KeyPair(data["kid"], data["private"], data["public"]).settings()


class LocalStack:
    """The servers and child processes of one ``whatschat dev`` run."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # as read at start; children get `env`
        self.data_dir = Path(settings.data_dir).resolve()  # everything persistent lives here
        self.servers: list[Any] = []  # embedded servers we started, stopped in reverse
        self.children: list[subprocess.Popen[bytes]] = []  # API and gateway processes
        self.env: dict[str, str] = {}  # settings handed to children
        self.stopping = threading.Event()  # set by SIGINT/SIGTERM

    def start_dependencies(self) -> None:
        from whatschat import embedded

        s = self.settings
        env: dict[str, str] = {}
        if not s.database_url:
            pg = embedded.EmbeddedPostgres(self.data_dir / "postgres")
            pg.start()
            self.servers.append(pg)
            env["DATABASE_URL"] = pg.url
        if not s.redis_url:
            rd = embedded.EmbeddedRedis(self.data_dir / "redis")
            rd.start()
            self.servers.append(rd)
            env["REDIS_URL"] = rd.url
        if not s.s3_endpoint_url:
            s3 = embedded.EmbeddedS3()
            s3.start()
            self.servers.append(s3)
            env.update(
                S3_ENDPOINT_URL=s3.url,
                S3_ACCESS_KEY_ID=s3.access_key_id,
                S3_SECRET_ACCESS_KEY=s3.secret_access_key,
            )
        if not s.token_signing_key:
            env.update(_keys(self.data_dir / "keys"))
        if s.s3_cors_origins == Settings.model_fields["s3_cors_origins"].default:
            # Browser uploads come from the web client's origin: the API port.
            env["S3_CORS_ORIGINS"] = (
                f"http://{s.api_host}:{s.api_port},http://localhost:{s.api_port}"
            )
        self.env = child_environment(env)

    def prepare(self) -> None:
        """Migrations and the bucket, with the children's settings."""
        from whatschat.storage import migrations, objects

        get_settings.cache_clear()
        _apply_to_settings(self.env)
        applied = migrations.apply(get_settings().database_url)
        logger.info("migrations applied now: %s", ", ".join(applied) or "none pending")
        objects.ensure_bucket()

    def start_children(self) -> None:
        s = self.settings
        api = [
            sys.executable,
            "-m",
            "whatschat.cli",
            "serve-api",
            "--host",
            s.api_host,
            "--port",
            str(s.api_port),
        ]
        gateway = [sys.executable, "-m", "whatschat.cli", "gateway"]
        for command in (api, gateway):
            self.children.append(subprocess.Popen(command, env=self.env))
        from whatschat.embedded import wait_for_port

        wait_for_port(s.api_port, 60, self.children[0])
        wait_for_port(s.gateway_port, 60, self.children[1])

    def fire_timers(self) -> None:
        """Call each internal function on its interval until stopped."""
        from functions.local_ingress import function_app
        from functions.routes import ROUTES

        due: dict[str, float] = {}
        clients: dict[str, Any] = {}
        for route in ROUTES:
            if route.target in TIMERS:
                app = function_app(route)
                clients[route.target] = app.test_client()  # type: ignore[attr-defined]
                due[route.target] = time.monotonic()
        while not self.stopping.wait(0.5):
            for target, client in clients.items():
                if time.monotonic() < due[target]:
                    continue
                due[target] = time.monotonic() + TIMERS[target]
                response = client.post(
                    "/",
                    json={},
                    headers={
                        "ce-specversion": "1.0",
                        "ce-type": "dev.knative.sources.ping",
                        "ce-source": "whatschat/local-stack",
                        "ce-id": uuid.uuid4().hex,
                    },
                )
                if response.status_code >= 400:
                    logger.warning("%s answered %s", target, response.status_code)

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 8
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
        for server in reversed(self.servers):
            server.stop()


def _apply_to_settings(env: dict[str, str]) -> None:
    """Make this process's settings match the children's (the stack's own calls)."""
    import os

    os.environ.update({k: v for k, v in env.items() if k.isupper()})
    get_settings.cache_clear()


def _web_client_address(s: Settings) -> str:
    """The web client's URL; it finds the gateway itself on the default ports."""
    address = f"http://{s.api_host}:{s.api_port}/app/"
    if (s.api_port, s.gateway_port) != (8080, 8081):
        address += f"?gateway=ws://{s.gateway_host}:{s.gateway_port}/v1/socket"
    return address


def run(ready_file: str = "") -> int:
    """Run the stack until SIGINT or SIGTERM; return the exit code."""
    started = time.monotonic()
    stack = LocalStack(get_settings())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        stack.start_dependencies()
        stack.prepare()
        stack.start_children()
        s = stack.settings
        addresses = {
            "api": f"http://{s.api_host}:{s.api_port}",
            "gateway": f"ws://{s.gateway_host}:{s.gateway_port}/v1/socket",
            "gateway_health": f"http://{s.gateway_host}:{s.gateway_http_port}/healthz",
            "web_client": _web_client_address(s),
            "openapi": f"http://{s.api_host}:{s.api_port}/openapi.json",
            "postgres": stack.env.get("DATABASE_URL", ""),
            "redis": stack.env.get("REDIS_URL", ""),
            "s3": stack.env.get("S3_ENDPOINT_URL", ""),
            "data_dir": str(stack.data_dir),
        }
        width = max(len(k) for k in addresses)
        print(f"\nWhatsChat is up in {time.monotonic() - started:.1f}s:", flush=True)
        for name, where in addresses.items():
            print(f"  {name:<{width}}  {where}", flush=True)
        print("Press Ctrl-C to stop.\n", flush=True)
        if ready_file:
            Path(ready_file).write_text(json.dumps(addresses))
        timer = threading.Thread(target=stack.fire_timers, name="timers", daemon=True)
        timer.start()
        while not stack.stopping.wait(0.5):
            for child in stack.children:
                if child.poll() is not None:
                    logger.error("child %s exited with %s; stopping", child.args, child.returncode)
                    code = 1
                    stack.stopping.set()
    except Exception:
        logger.exception("the local stack failed")
        code = 1
    finally:
        stack.stop()
        print("WhatsChat stopped.", flush=True)
    return code


def serve_api(host: str, port: int, threads: int = 16, workers: int = 1) -> int:
    """Serve every function on one port (processes x threads), with the server
    a function container runs (whatschat.http_server)."""
    from functions.local_ingress import LocalIngress, static_files
    from whatschat import http_server

    extra: dict[str, Any] = {}
    docs = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
    web = Path(__file__).resolve().parent.parent / "web"
    if docs.exists():
        extra["/openapi.json"] = static_files(docs.parent, "/")
    if web.exists():
        extra["/app/"] = static_files(web, "/app/")
    http_server.serve(
        LocalIngress(extra),
        host=host,
        port=port,
        workers=workers,
        threads=threads,
        log_level=get_settings().log_level,
    )
    return 0
