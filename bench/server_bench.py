"""The function server, side by side: functions-framework's CLI (gunicorn) vs ours (granian).

Serves the ``send`` function twice in one run, each the way it would run in
its container, with send's deployed WORKERS x THREADS (knative/scaling.yaml):

- **gunicorn**: ``functions-framework --target send ...`` (its CLI serves
  with gunicorn's threaded worker);
- **granian**: ``whatschat serve-function --target send ...`` (what
  container/entrypoint.sh runs; whatschat/http_server.py).

Both talk to the same embedded PostgreSQL and Redis. Each round measures,
on each server in alternating order, three kinds of request from the same
concurrent keep-alive clients: a 401 (no token: the HTTP stack, Flask,
functions-framework and our router), a 422 with a valid token (adds the
token check and body validation), and a real send (201). It prints
requests/s and p50/p99 per round, and the median ratio granian/gunicorn of
each kind. Figures are recorded in docs/operations.md ("The function
server").

    .venv/bin/python bench/server_bench.py [--requests 4000] [--clients 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import send_bench  # noqa: E402
import shared  # noqa: E402

from knative.render import load_scaling  # noqa: E402
from whatschat import tokens  # noqa: E402

BIN = Path(sys.executable).parent
SERVERS = ("gunicorn", "granian")


def _command(server: str) -> list[str]:
    program = (
        [str(BIN / "functions-framework")]
        if server == "gunicorn"
        else [str(BIN / "whatschat"), "serve-function"]
    )
    return [
        *program,
        "--target=send",
        f"--source={ROOT / 'functions' / 'send.py'}",
        "--signature-type=http",
    ]


def main() -> int:
    deployed = load_scaling()["send"]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    per_client = args.requests // args.clients

    print(shared.machine_line())
    print(
        f"send function, {deployed.workers} process(es) x {deployed.threads} threads,"
        f" {args.clients} concurrent keep-alive clients, {args.requests} requests each"
    )
    with (
        shared.running(
            "server-bench-",
            SEND_RATE_LIMIT="100000000",  # measure cost, not throttling
            DATABASE_POOL_MAX_SIZE=str(max(deployed.database_pool, deployed.threads)),
            WORKERS=str(deployed.workers),
            THREADS=str(deployed.threads),
            LOG_LEVEL="WARNING",
        ) as running,
        contextlib.ExitStack() as servers,
    ):
        with psycopg.connect(running.env["DATABASE_URL"], autocommit=True) as db:
            user_id, conversations = send_bench.seed(db, {s: args.clients for s in SERVERS})
        token, _ = tokens.issue_access_token(user_id, "bench_a")

        ports = {
            server: servers.enter_context(shared.serving(_command(server))) for server in SERVERS
        }

        def kinds(server: str, tag: str) -> dict[str, Callable[[int], Callable[[int], None]]]:
            port = ports[server]
            return {
                "401": send_bench.rejected_sender(port, None),
                "422+token": send_bench.rejected_sender(port, token),
                "send 201": send_bench.http_sender(
                    port, token, conversations[server], f"{server}-{tag}"
                ),
            }

        for server in SERVERS:  # warm up: load, pools, prepared statements
            for sender in kinds(server, "warm").values():
                send_bench.run_clients(args.clients, 20, sender)

        rates: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            print(f"\nround {round_ + 1}/{args.rounds}")
            print(f"{'server':<10} {'request':<10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            order = SERVERS if round_ % 2 == 0 else SERVERS[::-1]
            for server in order:
                for kind, sender in kinds(server, f"r{round_}").items():
                    latencies, wall = send_bench.run_clients(args.clients, per_client, sender)
                    rate = len(latencies) / wall
                    rates.setdefault((server, kind), []).append(rate)
                    print(
                        f"{server:<10} {kind:<10} {rate:8.0f}"
                        f" {shared.percentile(latencies, 0.5) * 1e3:8.2f}"
                        f" {shared.percentile(latencies, 0.99) * 1e3:8.2f}"
                    )
        print(f"\nmedian over {args.rounds} rounds (requests/s)")
        print(f"{'request':<10} {'gunicorn':>9} {'granian':>9} {'ratio':>6}")
        for kind in ("401", "422+token", "send 201"):
            slow = statistics.median(rates[("gunicorn", kind)])
            fast = statistics.median(rates[("granian", kind)])
            print(f"{kind:<10} {slow:9.0f} {fast:9.0f} {fast / slow:6.2f}")
        print(f"({datetime.now(UTC):%Y-%m-%d})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
