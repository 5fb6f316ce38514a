"""User-interactive authentication sessions (params and data are JSON text)."""
from __future__ import annotations

from storage.database import Cursor

_COLUMNS = "session_id, operation, user_id, params, completed, data, created_ts"


def create_session(cur: Cursor, row: dict, expired_before_ms: int) -> None:
    """Store a new session, dropping the expired ones on the way."""
    cur.execute("DELETE FROM uia_sessions WHERE created_ts < %s", (expired_before_ms,))
    cur.execute(
        f"INSERT INTO uia_sessions ({_COLUMNS}) VALUES (%(session_id)s, %(operation)s,"
        " %(user_id)s, %(params)s, %(completed)s, %(data)s, %(created_ts)s)", row)


def get_session(cur: Cursor, session_id: str, expired_before_ms: int) -> dict | None:
    cur.execute(f"SELECT {_COLUMNS} FROM uia_sessions WHERE session_id = %s AND created_ts >= %s",
                (session_id, expired_before_ms))
    row = cur.fetchone()
    return dict(zip(_COLUMNS.split(", "), row)) if row else None


def update_session(cur: Cursor, session_id: str, params: str, completed: list[str], data: str) -> None:
    cur.execute("UPDATE uia_sessions SET params = %s, completed = %s, data = %s WHERE session_id = %s",
                (params, completed, data, session_id))
