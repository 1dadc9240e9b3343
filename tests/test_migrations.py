"""Migrations: applied once each, safely from several processes at once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest

from tests.conftest import Stack
from whatschat.storage import migrations


@pytest.fixture
def empty_database(stack: Stack, db: psycopg.Connection[Any]) -> str:
    name = f"mig_{uuid.uuid4().hex[:8]}"
    db.execute(f"CREATE DATABASE {name}")
    return stack.database_url.rsplit("/", 1)[0] + f"/{name}"


def test_two_concurrent_migrate_processes_apply_each_migration_once(empty_database: str) -> None:
    command = [sys.executable, "-m", "whatschat.cli", "migrate", "--database-url", empty_database]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    versions = [m.version for m in migrations.available()]
    # Exactly one of the two applied everything; the other found nothing pending.
    assert sorted(outputs, key=len)[0].strip() == "applied 0 migration(s): none pending"
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [r[0] for r in rows] == versions
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)


def test_second_run_applies_nothing(empty_database: str) -> None:
    assert migrations.apply(empty_database) == [m.version for m in migrations.available()]
    assert migrations.apply(empty_database) == []


def test_an_edited_applied_migration_is_refused(empty_database: str) -> None:
    migrations.apply(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute(
            "UPDATE schema_migrations SET checksum = 'tampered' WHERE version = '0001_initial'"
        )
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrations.apply(empty_database)


def test_migrations_are_numbered_and_unique() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions, "no migrations shipped"
    prefixes = [v.split("_", 1)[0] for v in versions]
    assert all(p.isdigit() and len(p) == 4 for p in prefixes)
    assert len(set(prefixes)) == len(prefixes)
