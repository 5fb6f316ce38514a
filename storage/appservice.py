"""Application-service delivery state and login tokens."""
from __future__ import annotations

import json

from storage.database import Cursor


def load_state(cur: Cursor, as_id: str, start_at: int) -> tuple[int, str | None, int | None, list[str] | None]:
    """(last_stream, pending_txn, pending_upto, pending_event_ids); a new service starts now."""
    cur.execute("INSERT INTO appservice_state (as_id, last_stream) VALUES (%s, %s)"
                " ON CONFLICT (as_id) DO NOTHING", (as_id, start_at))
    cur.execute("SELECT last_stream, pending_txn, pending_upto, pending_events FROM appservice_state"
                " WHERE as_id = %s", (as_id,))
    last, txn, upto, events = cur.fetchone()
    return last, txn, upto, json.loads(events) if events else None


def set_pending(cur: Cursor, as_id: str, upto: int, event_ids: list[str]) -> str:
    """Store a new transaction of events under the next transaction id; returns the id."""
    cur.execute("UPDATE appservice_state SET last_txn_id = last_txn_id + 1,"
                " pending_txn = (last_txn_id + 1)::text, pending_upto = %s, pending_events = %s"
                " WHERE as_id = %s RETURNING last_txn_id", (upto, json.dumps(event_ids), as_id))
    return str(cur.fetchone()[0])


def next_txn_id(cur: Cursor, as_id: str) -> str:
    """The next transaction id (for a transaction of ephemeral data only): decimal digits,
    increasing, never handed out twice."""
    cur.execute("UPDATE appservice_state SET last_txn_id = last_txn_id + 1 WHERE as_id = %s"
                " RETURNING last_txn_id", (as_id,))
    return str(cur.fetchone()[0])


def delivered(cur: Cursor, as_id: str, upto: int) -> None:
    cur.execute("UPDATE appservice_state SET last_stream = %s, pending_txn = NULL, pending_upto = NULL,"
                " pending_events = NULL WHERE as_id = %s", (upto, as_id))


def events_after(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
    """(stream_ordering, event_id, room_id) in stream order."""
    cur.execute("SELECT stream_ordering, event_id, room_id FROM events WHERE stream_ordering > %s"
                " AND stream_ordering <= %s ORDER BY stream_ordering LIMIT %s", (after, upto, limit))
    return cur.fetchall()


def aliases_of_rooms(cur: Cursor, room_ids: list[str]) -> dict[str, list[str]]:
    cur.execute("SELECT room_id, room_alias FROM room_aliases WHERE room_id = ANY(%s)", (room_ids,))
    out: dict[str, list[str]] = {}
    for room_id, alias in cur.fetchall():
        out.setdefault(room_id, []).append(alias)
    return out


def set_user_appservice(cur: Cursor, user_id: str, as_id: str) -> None:
    cur.execute("UPDATE users SET appservice_id = %s WHERE user_id = %s", (as_id, user_id))


def add_login_token(cur: Cursor, token_hash: bytes, user_id: str, expires_ts: int) -> None:
    cur.execute("INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES (%s, %s, %s)",
                (token_hash, user_id, expires_ts))


def use_login_token(cur: Cursor, token_hash: bytes, now_ms: int) -> str | None:
    """The token's user if it is valid; it is deleted either way (one use only)."""
    cur.execute("DELETE FROM login_tokens WHERE token_hash = %s RETURNING user_id, expires_ts", (token_hash,))
    row = cur.fetchone()
    cur.execute("DELETE FROM login_tokens WHERE expires_ts < %s", (now_ms,))
    if row is None or row[1] < now_ms:
        return None
    return row[0]
