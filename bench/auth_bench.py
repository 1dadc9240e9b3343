"""Login throughput and latency through the HTTP function, and token verification cost.

Starts its own embedded PostgreSQL and Redis, serves the functions with
``whatschat serve-api`` (the function server, one process, threads) on a free port, and
measures with the configured argon2 parameters (production defaults unless
ARGON2_* are set):

- argon2id hash and verify time in this process;
- logins per second and p50/p99 latency with a few concurrent HTTP clients;
- the latency of a wrong password next to an unknown username (they should match);
- access-token verification cost per request (``tokens.verify_access_token``).

Run: ``.venv/bin/python bench/auth_bench.py [--logins 200] [--clients 4]``.
Figures are recorded in docs/auth.md (benchmark).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from typing import Any

import shared

from whatschat import tokens
from whatschat.config import get_settings

PASSWORD = "correct horse battery"


class Api:
    """A keep-alive HTTP connection to the served functions."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, float]:
        """POST JSON; return the status and the seconds it took."""
        started = time.perf_counter()
        self.connection.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started


def _login_load(port: int, users: list[str], total: int) -> tuple[list[float], float]:
    """``total`` logins spread over one thread per user; latencies and wall time."""
    latencies: list[float] = []
    lock = threading.Lock()
    share = total // len(users)
    errors: list[int] = []

    def client(username: str) -> None:
        api = Api(port)
        mine: list[float] = []
        for _ in range(share):
            status, took = api.post("/v1/auth/login", {"username": username, "password": PASSWORD})
            if status != 200:
                errors.append(status)
            mine.append(took)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(name,)) for name in users]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} logins failed: {sorted(set(errors))}")
    return latencies, wall


def _failure_latencies(port: int, username: str, rounds: int) -> tuple[list[float], list[float]]:
    """Alternate a wrong password and an unknown username; latency of each."""
    api = Api(port)
    wrong: list[float] = []
    unknown: list[float] = []
    for i in range(rounds):
        status, took = api.post(
            "/v1/auth/login", {"username": username, "password": "wrong password"}
        )
        assert status == 401, status
        wrong.append(took)
        status, took = api.post(
            "/v1/auth/login", {"username": f"nobody{i}", "password": "wrong password"}
        )
        assert status == 401, status
        unknown.append(took)
    return wrong, unknown


def _hash_costs(rounds: int) -> tuple[float, float]:
    from whatschat import passwords

    hashes = []
    started = time.perf_counter()
    for _ in range(rounds):
        hashes.append(passwords.hash_password(PASSWORD))
    hashing = (time.perf_counter() - started) / rounds
    started = time.perf_counter()
    for stored in hashes:
        assert passwords.verify(stored, PASSWORD)
    return hashing, (time.perf_counter() - started) / rounds


def _verify_cost(rounds: int) -> tuple[float, float]:
    """Microseconds per access-token verification, and per issue, in this process."""
    token, _ = tokens.issue_access_token(1, "bench")
    tokens.verify_access_token(token)  # load and cache the key
    started = time.perf_counter()
    for _ in range(rounds):
        tokens.verify_access_token(token)
    verify = (time.perf_counter() - started) / rounds * 1e6
    started = time.perf_counter()
    for _ in range(rounds // 10):
        tokens.issue_access_token(1, "bench")
    issue = (time.perf_counter() - started) / (rounds // 10) * 1e6
    return verify, issue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logins", type=int, default=200, help="successful logins in total")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--threads", type=int, default=8, help="server threads")
    parser.add_argument("--failures", type=int, default=30, help="wrong/unknown pairs")
    parser.add_argument("--verifications", type=int, default=20_000)
    args = parser.parse_args()

    settings = get_settings()
    print(shared.machine_line())
    print(
        f"argon2id: time_cost={settings.argon2_time_cost},"
        f" memory={settings.argon2_memory_kib} KiB, parallelism={settings.argon2_parallelism}"
    )

    with shared.running(
        "auth-bench-",
        # The bench measures cost, not throttling: never refuse.
        LOGIN_MAX_FAILURES_PER_USERNAME="1000000",
        LOGIN_MAX_FAILURES_PER_ADDRESS="1000000",
        REGISTRATIONS_PER_ADDRESS_PER_HOUR="1000000",
        DATABASE_POOL_MAX_SIZE=str(args.threads),
        LOG_LEVEL="WARNING",
    ):
        hashing, verifying = _hash_costs(10)
        print(f"argon2id in-process: hash {hashing * 1e3:.1f} ms, verify {verifying * 1e3:.1f} ms")
        verify_us, issue_us = _verify_cost(args.verifications)
        print(f"access token: verify {verify_us:.1f} us/request, issue {issue_us:.1f} us")
        with shared.serving(
            [sys.executable, "-m", "whatschat.cli", "serve-api", "--host", "127.0.0.1",
             "--threads", str(args.threads)]
        ) as port:  # fmt: skip
            users = [f"bench{i}" for i in range(args.clients)]
            api = Api(port)
            for name in users:
                status, _ = api.post(
                    "/v1/auth/register",
                    {"username": name, "display_name": name, "password": PASSWORD},
                )
                assert status == 201, status
            _login_load(port, users, len(users) * 2)  # warm: modules loaded, pools open

            latencies, wall = _login_load(port, users, args.logins)
            print(
                f"login over HTTP, {args.clients} clients, {len(latencies)} logins:"
                f" {len(latencies) / wall:.1f} logins/s,"
                f" p50 {shared.percentile(latencies, 0.5) * 1e3:.0f} ms,"
                f" p99 {shared.percentile(latencies, 0.99) * 1e3:.0f} ms"
            )
            wrong, unknown = _failure_latencies(port, users[0], args.failures)
            print(
                f"failed login, one client, {args.failures} each:"
                f" wrong password median {statistics.median(wrong) * 1e3:.1f} ms,"
                f" unknown user median {statistics.median(unknown) * 1e3:.1f} ms"
                f" (ratio {statistics.median(unknown) / statistics.median(wrong):.2f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
