"""Versioned SQL migrations in storage/migrations/NNN_name.sql, applied at start-up in order.
A database whose schema is newer than this code is refused rather than misused."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from storage.database import Cursor

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class SchemaTooNewError(RuntimeError):
    pass


def available_migrations() -> list[tuple[int, Path]]:
    found = []
    for path in MIGRATIONS_DIR.glob("*.sql"):
        m = re.match(r"(\d+)_", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def current_code_version() -> int:
    migrations = available_migrations()
    return migrations[-1][0] if migrations else 0


def apply_migrations(cur: Cursor) -> int:
    """Bring the schema up to date inside the caller's transaction; returns the version."""
    # An advisory lock keeps two processes starting at once from racing.
    cur.execute("SELECT pg_advisory_xact_lock(727274)")
    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)")
    cur.execute("SELECT version FROM schema_version")
    applied = {r[0] for r in cur.fetchall()}
    have = max(applied, default=0)
    code = current_code_version()
    if have > code:
        raise SchemaTooNewError(
            f"database schema is version {have} but this code only knows up to {code}; "
            "refusing to run an older server against a newer database"
        )
    # Every migration not yet recorded is applied, in number order: numbers are reserved
    # when work starts, so one may land after a higher-numbered one.
    for number, path in available_migrations():
        if number not in applied:
            logger.info("applying schema migration %s", path.name)
            cur.execute(path.read_text())
            cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
            have = max(have, number)
    return have
