"""Presence, persisted lazily so that a restart remembers last activity."""
from __future__ import annotations

from storage.database import Cursor, execute_values


def save(cur: Cursor, rows: list[tuple[str, str, str | None, int]]) -> None:
    execute_values(
        cur,
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts) VALUES %s"
        " ON CONFLICT (user_id) DO UPDATE SET state = EXCLUDED.state,"
        " status_msg = EXCLUDED.status_msg, last_active_ts = EXCLUDED.last_active_ts",
        rows,
    )


def load_all(cur: Cursor) -> list[tuple[str, str, str | None, int]]:
    cur.execute("SELECT user_id, state, status_msg, last_active_ts FROM presence")
    return cur.fetchall()
