"""What the benchmarks share: the servers they measure against, the line that
says which machine measured, and percentiles.

:func:`running` starts embedded PostgreSQL (migrated), and Redis and S3 (its
bucket created) when asked, in a temporary folder; puts their settings and a
fresh token key pair in this process's environment, so every server a bench
starts inherits them; and stops everything on the way out. :func:`serving`
runs a server under test on a free port for the length of a block.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from whatschat import embedded, tokens  # noqa: E402
from whatschat.config import get_settings  # noqa: E402


def machine_line() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python"
        f" {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of the sorted values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass
class Servers:
    folder: Path  # the temporary folder, removed on exit
    postgres: embedded.EmbeddedPostgres
    redis: embedded.EmbeddedRedis | None
    s3: embedded.EmbeddedS3 | None
    env: dict[str, str]  # the settings put in os.environ


@contextmanager
def running(
    prefix: str, *, redis: bool = True, s3: bool = False, **settings: str
) -> Iterator[Servers]:
    """The servers, with ``settings`` (more settings, e.g. limits) in the environment too."""
    from whatschat.storage import database, migrations, objects

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, ExitStack() as stops:
        folder = Path(tmp)
        postgres = embedded.EmbeddedPostgres(folder / "postgres")
        postgres.start()
        stops.callback(postgres.stop)
        env = {"DATABASE_URL": postgres.url, **tokens.generate_key_pair("bench").settings()}
        redis_server = s3_server = None
        if redis:
            redis_server = embedded.EmbeddedRedis(folder / "redis")
            redis_server.start()
            stops.callback(redis_server.stop)
            env["REDIS_URL"] = redis_server.url
        if s3:
            s3_server = embedded.EmbeddedS3()
            s3_server.start()
            stops.callback(s3_server.stop)
            env.update(
                S3_ENDPOINT_URL=s3_server.url,
                S3_ACCESS_KEY_ID=s3_server.access_key_id,
                S3_SECRET_ACCESS_KEY=s3_server.secret_access_key,
                S3_BUCKET="whatschat-bench",
            )
        env.update(settings)
        os.environ.update(env)
        get_settings.cache_clear()
        stops.callback(database.close_pools)
        migrations.apply(postgres.url)
        if s3:
            objects.ensure_bucket()
        yield Servers(folder, postgres, redis_server, s3_server, env)


@contextmanager
def serving(command: list[str]) -> Iterator[int]:
    """``command`` (a server that takes ``--port``) listening on a free port
    until the block ends; yields the port."""
    port = embedded.free_port()
    process = subprocess.Popen([*command, "--port", str(port)])
    try:
        embedded.wait_for_port(port, 60, process)
        yield port
    finally:
        embedded.stop_process(process, signal.SIGTERM, 15)
