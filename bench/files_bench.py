"""Latency of each step of an upload and a download, by file size.

Starts its own embedded PostgreSQL, Redis (the per-user request limit) and
moto S3 server (``bench/shared.py``), loads the ``uploads``
and ``downloads`` functions through functions-framework's ``create_app`` (as
their containers do) and, for each size, repeats the whole flow: request an
upload, POST the file to S3, complete it (HEAD, server-side copy, ranged GET,
insert), get a download link, GET the file from S3. Prints the median and p90
of each step side by side, so the cost that grows with the file (the S3 copy
in `complete`) stands out from the fixed cost.

Run: ``.venv/bin/python bench/files_bench.py [--rounds 20]``. Figures are
recorded in docs/files.md (benchmark). moto is an in-memory Python server:
absolute S3 figures are moto's, not those of a real S3.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import requests
import shared
from werkzeug.test import Client

from whatschat import http_server, tokens

ROOT = Path(__file__).resolve().parent.parent
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
SIZES = {"1 KiB": 1024, "1 MiB": 1024 * 1024, "10 MiB": 10 * 1024 * 1024}
STEPS = ("request", "s3 post", "complete", "download link", "s3 get")


def _app(target: str) -> Client:
    """A test client of the function's app, built as its container builds it."""
    return Client(http_server.function_app(target, str(ROOT / "functions" / f"{target}.py")))


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _flow(
    uploads: Any, downloads: Any, auth: dict[str, str], chat: int, data: bytes
) -> list[float]:
    """One upload and download of ``data``; the seconds each step took."""
    body = {
        "conversation_id": chat,
        "file_name": "bench.png",
        "content_type": "image/png",
        "size_bytes": len(data),
    }
    ticket, t_request = _timed(lambda: uploads.post("/v1/uploads", json=body, headers=auth))
    assert ticket.status_code == 201, ticket.get_json()
    t = ticket.get_json()
    stored, t_post = _timed(
        lambda: requests.post(
            t["url"], data=t["fields"], files={"file": ("bench.png", data)}, timeout=60
        )
    )
    assert stored.status_code == 204, stored.text
    done, t_complete = _timed(lambda: uploads.post(t["complete_url"], headers=auth))
    assert done.status_code == 201, done.get_json()
    attachment = done.get_json()["id"]
    link, t_link = _timed(lambda: downloads.get(f"/v1/attachments/{attachment}", headers=auth))
    assert link.status_code == 200, link.get_json()
    fetched, t_get = _timed(lambda: requests.get(link.get_json()["url"], timeout=60))
    assert fetched.content == data
    return [t_request, t_post, t_complete, t_link, t_get]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="flows per size (max 200)")
    args = parser.parse_args()
    rounds = max(1, min(args.rounds, 200))

    with shared.running(
        "files-bench-", s3=True, MAX_UPLOAD_BYTES=str(max(SIZES.values()))
    ) as running:
        with psycopg.connect(running.env["DATABASE_URL"], autocommit=True) as db:
            user = db.execute(
                "INSERT INTO users (username, display_name, password_hash)"
                " VALUES ('bench', 'Bench', 'x') RETURNING id"
            ).fetchone()[0]  # type: ignore[index]
            chat = db.execute(
                "INSERT INTO conversations (kind, title, created_by)"
                " VALUES ('group', 'bench', %s) RETURNING id",
                (user,),
            ).fetchone()[0]  # type: ignore[index]
            db.execute(
                "INSERT INTO members (conversation_id, user_id) VALUES (%s, %s)", (chat, user)
            )
        token, _ = tokens.issue_access_token(user, "bench")
        auth = {"Authorization": f"Bearer {token}"}
        uploads, downloads = _app("uploads"), _app("downloads")
        _flow(uploads, downloads, auth, chat, PNG_HEADER + b"\0" * 100)  # warm up

        print(f"files bench: {rounds} flows per size; {platform.python_version()},")
        print(f"{os.cpu_count()} CPUs; moto S3 server and PostgreSQL on 127.0.0.1")
        print("median / p90 in milliseconds")
        print(f"{'size':>8} | " + " | ".join(f"{step:>15}" for step in STEPS))
        for label, size in SIZES.items():
            data = PNG_HEADER + os.urandom(size - len(PNG_HEADER))
            runs = [_flow(uploads, downloads, auth, chat, data) for _ in range(rounds)]
            cells = []
            for index in range(len(STEPS)):
                values = [run[index] * 1000 for run in runs]
                p90 = shared.percentile(values, 0.9)
                cells.append(f"{statistics.median(values):6.1f} / {p90:6.1f}")
            print(f"{label:>8} | " + " | ".join(f"{cell:>15}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
