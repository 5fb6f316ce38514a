"""Read receipts: the latest receipt per (room, type, user, thread)."""
from __future__ import annotations

from storage.database import Cursor


def put_receipt(cur: Cursor, room_id: str, receipt_type: str, user_id: str, thread_id: str,
                event_id: str, ts: int, stream_id: int) -> None:
    cur.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (room_id, receipt_type, user_id, thread_id)"
        " DO UPDATE SET event_id = EXCLUDED.event_id, ts = EXCLUDED.ts, stream_id = EXCLUDED.stream_id",
        (room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id),
    )


def receipts_since(cur: Cursor, room_ids: list[str], since: int, upto: int) -> list[tuple]:
    """(room_id, receipt_type, user_id, thread_id, event_id, ts) with since < stream <= upto."""
    cur.execute(
        "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts FROM receipts"
        " WHERE room_id = ANY(%s) AND stream_id > %s AND stream_id <= %s",
        (room_ids, since, upto),
    )
    return cur.fetchall()


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM receipts")
    return cur.fetchone()[0]


def latest_per_room(cur: Cursor, room_ids: list[str]) -> dict[str, int]:
    cur.execute("SELECT room_id, max(stream_id) FROM receipts WHERE room_id = ANY(%s) GROUP BY room_id",
                (room_ids,))
    return dict(cur.fetchall())


def changes_between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str, str, str, str, str]]:
    """(stream_id, room_id, receipt_type, user_id, thread_id, event_id) of receipts stored
    with after < stream_id <= upto (several sync processes: what the stream owner stored)."""
    cur.execute("SELECT stream_id, room_id, receipt_type, user_id, thread_id, event_id FROM receipts"
                " WHERE stream_id > %s AND stream_id <= %s ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return cur.fetchall()
