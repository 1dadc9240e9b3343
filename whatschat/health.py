"""Dependency health: is each of PostgreSQL, Redis and S3 reachable right now?"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from whatschat.config import get_settings


def _check_postgres() -> None:
    from whatschat.storage import database

    settings = get_settings()
    database.ping(settings.database_url, settings.database_connect_timeout_seconds)


def _check_redis() -> None:
    from whatschat.storage import redis_client

    redis_client.ping()


def _check_s3() -> None:
    from whatschat.storage import objects

    objects.ping()


CHECKS = {"postgres": _check_postgres, "redis": _check_redis, "s3": _check_s3}


def check(names: tuple[str, ...] = ("postgres", "redis", "s3")) -> dict[str, str]:
    """Each dependency's state: ``"ok"`` or ``"failing: <reason>"``, checked in parallel."""

    def run(name: str) -> str:
        try:
            CHECKS[name]()
        except Exception as exc:  # report any failure, never raise
            return f"failing: {type(exc).__name__}: {str(exc)[:200]}"
        return "ok"

    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        return dict(zip(names, pool.map(run, names), strict=True))
