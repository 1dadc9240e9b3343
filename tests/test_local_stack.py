"""`make dev` end to end: the stack comes up, is healthy, and leaves nothing running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from websockets.sync.client import connect

from whatschat.embedded import free_port

# Settings the test session exports for its own servers; the stack under test
# must start its own embedded ones instead.
_INHERITED = ("DATABASE_URL", "DATABASE_REPLICA_URL", "REDIS_URL", "S3_", "TOKEN_")


def _stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED)}
    env.update(
        WHATSCHAT_DATA_DIR=str(tmp_path / "data"),
        WHATSCHAT_API_PORT=str(free_port()),
        GATEWAY_PORT=str(free_port()),
        GATEWAY_HTTP_PORT=str(free_port()),
    )
    return env


def _start(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    ready = tmp_path / f"ready-{time.monotonic_ns()}.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "whatschat.cli", "dev", "--ready-file", str(ready)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert process.poll() is None, "whatschat dev exited before it was ready"
        assert time.monotonic() < deadline, "whatschat dev not ready after 120 s"
        time.sleep(0.2)
    return process, json.loads(ready.read_text())


def _stop(process: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> list[psutil.Process]:
    """Signal the stack; return every process of its tree still alive 10 s later."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    assert len(tree) >= 4, f"expected the stack's servers and children, got {tree}"
    process.send_signal(sig)
    process.wait(15)
    _, alive = psutil.wait_procs(tree, timeout=10)
    return alive


@pytest.mark.slow
def test_make_dev_brings_up_a_healthy_stack_and_stops_cleanly(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    process, addresses = _start(tmp_path, env)
    try:
        with urllib.request.urlopen(addresses["api"] + "/healthz", timeout=10) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {
                "status": "ok",
                "dependencies": {"postgres": "ok", "redis": "ok", "s3": "ok"},
            }
        # The gateway port accepts a WebSocket upgrade.
        with connect(addresses["gateway"], open_timeout=10) as socket:
            assert socket.protocol.state.name == "OPEN"
    finally:
        alive = _stop(process)
    assert process.returncode == 0
    assert alive == [], f"processes left running after SIGINT: {alive}"


@pytest.mark.slow
def test_data_persists_between_runs(tmp_path: Path) -> None:
    env = _stack_env(tmp_path)
    process, addresses = _start(tmp_path, env)
    try:
        import psycopg

        with psycopg.connect(addresses["postgres"], autocommit=True) as conn:
            conn.execute(
                "INSERT INTO users (username, display_name, password_hash)"
                " VALUES ('persisted', 'P', 'x')"
            )
    finally:
        assert _stop(process) == []
    started = time.monotonic()
    process, addresses = _start(tmp_path, env)
    warm_start = time.monotonic() - started
    try:
        with psycopg.connect(addresses["postgres"]) as conn:
            row = conn.execute("SELECT count(*) FROM users WHERE username = 'persisted'")
            assert row.fetchone() == (1,)
        keys = Path(env["WHATSCHAT_DATA_DIR"]) / "keys" / "token-keys.json"
        assert keys.exists()
    finally:
        # SIGTERM (what a process manager sends) stops everything too.
        assert _stop(process, signal.SIGTERM) == []
    assert process.returncode == 0
    print(f"\nwarm `whatschat dev` start to ready: {warm_start:.1f}s")
