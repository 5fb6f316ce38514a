"""Schema migrations against a real PostgreSQL (the session server's cluster, in a scratch
database): a fresh database gets every migration, and a migration whose number was
reserved earlier but landed after a higher-numbered one is still applied."""
from __future__ import annotations

import uuid

import psycopg2
import pytest

from storage.migrate import apply_migrations, available_migrations


@pytest.fixture
def scratch_db(server):
    name = f"mig_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(server.dsn())
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    dsn = server.dsn().replace("/postgres?", f"/{name}?")
    yield dsn
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE {name}")
    admin.close()


def _migrate(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            return apply_migrations(cur)
    finally:
        conn.close()


def _recorded(dsn: str) -> list[int]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version FROM schema_version ORDER BY version")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


def test_fresh_database_gets_every_migration_once(scratch_db):
    numbers = [n for n, _ in available_migrations()]
    assert _migrate(scratch_db) == numbers[-1]
    assert _recorded(scratch_db) == numbers
    assert _migrate(scratch_db) == numbers[-1]  # nothing applied twice
    assert _recorded(scratch_db) == numbers


def test_a_lower_migration_landing_late_is_applied(scratch_db):
    numbers = [n for n, _ in available_migrations()]
    _migrate(scratch_db)
    # Pretend the database was created before the reports migration (008) landed,
    # while everything numbered above it was already there.
    conn = psycopg2.connect(scratch_db)
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE content_reports")
        cur.execute("DELETE FROM schema_version WHERE version = 8")
    conn.close()
    _migrate(scratch_db)
    assert _recorded(scratch_db) == numbers
    conn = psycopg2.connect(scratch_db)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM content_reports")
        assert cur.fetchone()[0] == 0
    conn.close()
