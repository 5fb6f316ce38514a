"""Per-user account data (global and per room, room tags among it) and stored filters."""
from __future__ import annotations

import json

from storage.database import Cursor


def put_account_data(cur: Cursor, user_id: str, room_id: str, data_type: str, content: dict,
                     stream_id: int) -> None:
    cur.execute(
        "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
        " VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = EXCLUDED.content,"
        " stream_id = EXCLUDED.stream_id",
        (user_id, room_id, data_type, json.dumps(content), stream_id),
    )


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM account_data")
    return cur.fetchone()[0]


def max_stream_for_user(cur: Cursor, user_id: str) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM account_data WHERE user_id = %s", (user_id,))
    return cur.fetchone()[0]


def changed_since(cur: Cursor, user_id: str, since: int, upto: int) -> list[tuple[str, str, str]]:
    cur.execute("SELECT room_id, type, content FROM account_data WHERE user_id = %s"
                " AND stream_id > %s AND stream_id <= %s", (user_id, since, upto))
    return cur.fetchall()


def get_account_data(cur: Cursor, user_id: str, room_id: str, data_type: str) -> dict | None:
    cur.execute("SELECT content FROM account_data WHERE user_id = %s AND room_id = %s AND type = %s",
                (user_id, room_id, data_type))
    row = cur.fetchone()
    return json.loads(row[0]) if row else None


def create_filter(cur: Cursor, user_id: str, filter_json: dict) -> int:
    # Per-user numbering; a lock on the user keeps two concurrent creations apart.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (user_id,))
    cur.execute("SELECT COALESCE(max(filter_id), -1) + 1 FROM user_filters WHERE user_id = %s",
                (user_id,))
    filter_id = cur.fetchone()[0]
    cur.execute("INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (%s, %s, %s)",
                (user_id, filter_id, json.dumps(filter_json)))
    return filter_id


def get_filter(cur: Cursor, user_id: str, filter_id: int) -> dict | None:
    cur.execute("SELECT filter_json FROM user_filters WHERE user_id = %s AND filter_id = %s",
                (user_id, filter_id))
    row = cur.fetchone()
    return json.loads(row[0]) if row else None


def changes_between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
    """(stream_id, user_id) of account data written with after < stream_id <= upto."""
    cur.execute("SELECT stream_id, user_id FROM account_data WHERE stream_id > %s AND stream_id <= %s"
                " ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return cur.fetchall()
