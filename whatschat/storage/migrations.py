"""Apply the versioned SQL files in ``whatschat/migrations`` exactly once each.

Why our own runner and not a migration framework: the schema is plain SQL, we
need one guarantee a generic tool does not give with psycopg 3 out of the box
(several processes starting at once — Knative Job retries, two developers'
``whatschat migrate`` — must serialize), and this is ~60 lines. The runner takes
a PostgreSQL advisory lock, so a second process waits, then finds every
migration applied and exits 0. See docs/schema.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import psycopg

# An arbitrary constant shared by every runner: the advisory lock's key.
_LOCK_KEY = 0x57_43_4D_49_47  # "WCMIG"


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``NNNN_name.sql``."""

    version: str  # the file name without .sql; sorts in apply order
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    """The migrations shipped with the package, in apply order."""
    folder = resources.files("whatschat") / "migrations"
    found = [
        Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.version)


def apply(database_url: str) -> list[str]:
    """Apply pending migrations; return the versions this call applied.

    Raises RuntimeError when an applied migration's file has changed since.
    """
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done: dict[str, str] = dict(
                conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            )
            for migration in available():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
