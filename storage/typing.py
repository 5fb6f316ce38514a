"""Typing by stream id, written by the stream owner when other processes serve /sync
(sync/stream_followers.py); typing itself lives in the owner's memory."""
from __future__ import annotations

from storage.database import Cursor, execute_values


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM typing_stream")
    return cur.fetchone()[0]


def append(cur: Cursor, rows: list[tuple[int, str, list[str]]], now_ms: int, prune_before_ms: int | None) -> None:
    execute_values(cur, "INSERT INTO typing_stream (stream_id, room_id, user_ids, written_ts) VALUES %s"
                        " ON CONFLICT DO NOTHING", [(*r, now_ms) for r in rows])
    if prune_before_ms is not None:
        cur.execute("DELETE FROM typing_stream WHERE written_ts < %s", (prune_before_ms,))


def changes_between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str, list[str]]]:
    cur.execute("SELECT stream_id, room_id, user_ids FROM typing_stream WHERE stream_id > %s AND stream_id <= %s"
                " ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return [(s, r, list(u)) for s, r, u in cur.fetchall()]


def typing_now(cur: Cursor, since_ms: int) -> list[tuple[int, str, list[str]]]:
    """Each room's latest row written after `since_ms`, where someone was typing."""
    cur.execute("SELECT * FROM (SELECT DISTINCT ON (room_id) stream_id, room_id, user_ids FROM typing_stream"
                " WHERE written_ts > %s ORDER BY room_id, stream_id DESC) t WHERE cardinality(user_ids) > 0",
                (since_ms,))
    return [(s, r, list(u)) for s, r, u in cur.fetchall()]
