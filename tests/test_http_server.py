"""The function server (``whatschat serve-function``), run for real as a container runs it.

What the deployment relies on (docs/deployment.md, docs/operations.md "The
function server"): SIGTERM lets in-flight requests finish; the port opens
only once the function is loaded, and a function that fails to load exits
without ever listening; a crashed worker takes the server down (so the
kubelet restarts the container); WORKERS and THREADS are required.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from whatschat.embedded import free_port, stop_process, wait_for_port

BIN = Path(sys.executable).parent

ENVIRON_FUNCTION = """import json
import os

import functions_framework


@functions_framework.http
def environ(request):
    return json.dumps({
        "environ": sorted(k for k in request.environ if k.isupper()),
        "headers": dict(request.headers),
        "setting": os.environ.get("WHATSCHAT_TEST_SECRET"),
    })
"""

SLOW_FUNCTION = """import time

import functions_framework


@functions_framework.http
def slow(request):
    time.sleep(float(request.args.get("seconds", "0")))
    return "done"
"""


def _serve(
    source: Path,
    port: int,
    target: str = "slow",
    stderr: int = subprocess.DEVNULL,
    stdout: int = subprocess.DEVNULL,
    threads: int = 2,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(BIN / "whatschat"), "serve-function", f"--target={target}",
         f"--source={source}", f"--port={port}"],
        env={
            **os.environ,
            "WORKERS": "1",
            "THREADS": str(threads),
            "LOG_LEVEL": "INFO",
            **(env or {}),
        },
        stdout=stdout,
        stderr=stderr,
    )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, signal.SIGTERM, 20)  # SIGTERM: the server stops its worker itself


def _workers(process: subprocess.Popen[bytes]) -> list[int]:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def slow_source(tmp_path: Path) -> Path:
    path = tmp_path / "slow.py"
    path.write_text(SLOW_FUNCTION)
    return path


def test_sigterm_lets_an_in_flight_request_finish(slow_source: Path) -> None:
    port = free_port()
    process = _serve(slow_source, port)
    try:
        wait_for_port(port, 60, process)
        answers: list[tuple[int, bytes]] = []

        def call() -> None:
            url = f"http://127.0.0.1:{port}/?seconds=1.5"
            with urllib.request.urlopen(url, timeout=20) as response:
                answers.append((response.status, response.read()))

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)  # the request is in the function now
        process.send_signal(signal.SIGTERM)
        caller.join(20)
        assert answers == [(200, b"done")]
        assert process.wait(20) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        _stop(process)


def test_a_function_that_fails_to_load_exits_without_listening(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no settings')\n")
    port = free_port()
    process = _serve(broken, port, target="broken", stderr=subprocess.PIPE)
    try:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode != 0
        assert b"no settings" in stderr
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        _stop(process)


def test_a_crashed_worker_stops_the_server(slow_source: Path) -> None:
    port = free_port()
    process = _serve(slow_source, port)
    try:
        wait_for_port(port, 60, process)
        workers = _workers(process)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(20) != 0  # the kubelet restarts the container
    finally:
        _stop(process)


def test_a_killed_server_takes_its_worker_with_it(slow_source: Path) -> None:
    # SIGKILL leaves the server no chance to stop its worker; the kernel
    # must, or the worker lives on (holding the function's connections).
    port = free_port()
    process = _serve(slow_source, port)
    try:
        wait_for_port(port, 60, process)
        (worker,) = _workers(process)
        process.kill()
        process.wait(10)
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
    finally:
        _stop(process)


@pytest.mark.parametrize("workers", [None, "0", "two"])
def test_workers_and_threads_are_required(slow_source: Path, workers: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WORKERS", "THREADS")}
    if workers is not None:
        env.update({"WORKERS": workers, "THREADS": "4"})
    result = subprocess.run(
        [str(BIN / "whatschat"), "serve-function", "--target=slow",
         f"--source={slow_source}", f"--port={free_port()}"],
        env=env,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"WORKERS and THREADS" in result.stderr


def test_many_threads_are_served_without_granians_thread_advice(slow_source: Path) -> None:
    # THREADS is chosen per function (knative/scaling.yaml); granian's advice
    # against more threads than CPUs would only be noise in every log.
    port = free_port()
    threads = (os.cpu_count() or 1) * 4 + 2
    process = _serve(slow_source, port, stdout=subprocess.PIPE, threads=threads)
    try:
        wait_for_port(port, 60, process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.read() == b"done"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        assert b"Listening at" in output  # granian's log is captured here
        assert b"Configuration allows spawning" not in output
    finally:
        _stop(process)


def test_a_request_carries_only_itself_not_the_process_environment(tmp_path: Path) -> None:
    # granian copies the process environment into every WSGI environ: settings
    # and secrets would ride along, and a variable named like a header would
    # look like one the client sent.
    source = tmp_path / "environ.py"
    source.write_text(ENVIRON_FUNCTION)
    port = free_port()
    env = {"WHATSCHAT_TEST_SECRET": "s3cr3t", "HTTP_X_INJECTED": "from-the-pod"}
    process = _serve(source, port, target="environ", env=env)
    try:
        wait_for_port(port, 60, process)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/?q=1", headers={"X-Sent": "by-the-client"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            seen = json.loads(response.read())
        assert seen["setting"] == "s3cr3t"  # the function still has its settings
        assert "WHATSCHAT_TEST_SECRET" not in seen["environ"]
        assert "PATH" not in seen["environ"]
        assert "HTTP_X_INJECTED" not in seen["environ"]
        assert "X-Injected" not in seen["headers"]
        assert seen["headers"]["X-Sent"] == "by-the-client"
        assert {"REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR"} <= set(
            seen["environ"]
        )
    finally:
        _stop(process)
