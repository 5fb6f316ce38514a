"""Device-list changes: which users' devices or keys changed, by stream position."""
from __future__ import annotations

from storage.database import Cursor


def record_change(cur: Cursor, stream_id: int, user_id: str) -> None:
    cur.execute("INSERT INTO device_list_changes (stream_id, user_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING", (stream_id, user_id))


def changed_since(cur: Cursor, since: int, upto: int) -> list[str]:
    cur.execute("SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > %s"
                " AND stream_id <= %s", (since, upto))
    return [r[0] for r in cur.fetchall()]


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM device_list_changes")
    return cur.fetchone()[0]
