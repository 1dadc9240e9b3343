"""The container image, checked without a container engine.

hadolint lints the Containerfile and shellcheck every shell script (both
from the dev extra). The entrypoint is run for real: it must replace itself
with the function server (`exec`, so the server gets SIGTERM as PID 1 does)
and refuse a bad FUNCTION_TARGET. See docs/deployment.md, "The image".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Stack
from whatschat.embedded import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
ENTRYPOINT = ROOT / "container" / "entrypoint.sh"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} missing: install the dev extra"
    return str(path)


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", str(CONTAINERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _shell_scripts() -> list[Path]:
    skip = {".venv", ".git", "node_modules", ".whatschat"}
    return sorted(p for p in ROOT.rglob("*.sh") if not skip & set(p.relative_to(ROOT).parts))


def test_shellcheck_passes_on_every_shell_script() -> None:
    scripts = _shell_scripts()
    assert ENTRYPOINT in scripts and ROOT / "knative" / "kind" / "up.sh" in scripts
    result = subprocess.run(
        [_tool("shellcheck"), "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stages() -> list[list[str]]:
    """The Containerfile's instructions (continuations joined), split per stage."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    stages: list[list[str]] = []
    for line in lines:
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_default_stage_runs_as_a_non_root_user_with_an_exec_entrypoint() -> None:
    stages = _stages()
    final = stages[-1]
    assert final[0].split()[1] == "base", "the default (last) stage is the runtime image"
    (base,) = [s for s in stages if s[0].endswith(" AS base")]
    users = [line.split()[1] for line in base if line.upper().startswith("USER ")]
    assert users and re.fullmatch(r"[1-9][0-9]{3,}:[1-9][0-9]{3,}", users[-1]), users
    (entrypoint,) = [line for line in base if line.upper().startswith("ENTRYPOINT ")]
    assert entrypoint.split(None, 1)[1].startswith('["'), "exec form, no shell wrapper"
    env = " ".join(line for line in base if line.upper().startswith("ENV "))
    assert re.search(r"\bWORKERS=\d+", env) and re.search(r"\bTHREADS=\d+", env)


def test_every_base_image_is_pinned() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", CONTAINERFILE.read_text(), re.MULTILINE))
    for stage in _stages():
        image = stage[0].split()[1]
        image = args.get(image.strip("${}"), image)
        if image in ("base", "build"):
            continue
        assert re.search(r":[0-9][\w.\-]*$", image), f"unpinned base image {image}"


def test_every_copied_path_is_in_the_build_context() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in _stages():
        for line in stage:
            if not line.upper().startswith("COPY ") or "--from=" in line:
                continue
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), source
                assert source.split("/")[0] in allowed, f"{source} excluded by .dockerignore"


def _run_entrypoint(target: str, port: int, stderr: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "FUNCTIONS_DIR": str(ROOT / "functions"),
        "FUNCTION_TARGET": target,
        "PORT": str(port),
        "WORKERS": "1",
        "THREADS": "2",
        "OPENFAAS_SECRETS_DIR": str(ROOT / "no-such-folder"),
    }
    return subprocess.Popen(
        ["sh", str(ENTRYPOINT), "function"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def test_the_entrypoint_execs_the_function_server_which_stops_on_sigterm() -> None:
    port = free_port()
    process = _run_entrypoint("healthz", port, subprocess.DEVNULL)
    try:
        wait_for_port(port, 60, process)
        # Same PID, now the server itself: no shell left to swallow SIGTERM.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve-function" in cmdline, cmdline
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/no-such-path", timeout=10)
        with answer.value as response:
            assert response.code == 404
            assert response.headers["Content-Type"] == "application/problem+json"
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(20) == 0
        assert time.monotonic() - started < 20
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def test_login_answers_an_unknown_user_right_after_the_server_starts(stack: Stack) -> None:
    # login starts hashing its dummy password in a thread at load; the
    # server forks its worker after loading, possibly while that thread holds
    # its lock. The worker must still answer (it used to wait forever).
    port = free_port()
    process = _run_entrypoint("login", port, subprocess.DEVNULL)
    try:
        wait_for_port(port, 60, process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/auth/login",
            data=b'{"username": "nobody_here", "password": "not-a-real-password"}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=20)
        with answer.value as response:
            assert response.code == 401
            assert response.headers["Content-Type"] == "application/problem+json"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)


@pytest.mark.parametrize(("target", "code"), [("../../etc/passwd", 64), ("no_such_function", 66)])
def test_the_entrypoint_refuses_a_bad_target(target: str, code: int) -> None:
    process = _run_entrypoint(target, free_port(), subprocess.PIPE)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == code
    assert b"FUNCTION_TARGET" in stderr or b"no function module" in stderr
