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


# ---- several processes: the presence job's changes, by stream id ------------------------

STREAM = "presence"


def stream_position(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM presence_stream")
    return cur.fetchone()[0]


def append_changes(cur: Cursor, rows: list[tuple[int, str, str, str | None, int, bool]], now_ms: int,
                   instance: str, prune_before_ms: int | None) -> None:
    """Rows (stream_id, user, state, status_msg, last_active_ts, activity_only), announced
    in the same transaction; now and then, rows older than `prune_before_ms` that a newer
    row of the same user replaces are dropped."""
    from storage import replication as repl_store  # noqa: PLC0415
    execute_values(cur, "INSERT INTO presence_stream (stream_id, user_id, state, status_msg, last_active_ts,"
                        " activity_only, written_ts) VALUES %s", [(*r, now_ms) for r in rows])
    if prune_before_ms is not None:
        cur.execute("DELETE FROM presence_stream p USING presence_stream q WHERE q.user_id = p.user_id"
                    " AND q.stream_id > p.stream_id AND p.written_ts < %s", (prune_before_ms,))
    repl_store.announce(cur, STREAM, instance, rows[-1][0])


def changes_between(cur: Cursor, after: int, upto: int,
                    limit: int) -> list[tuple[int, str, str, str | None, int, bool]]:
    cur.execute("SELECT stream_id, user_id, state, status_msg, last_active_ts, activity_only FROM presence_stream"
                " WHERE stream_id > %s AND stream_id <= %s ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return cur.fetchall()


def latest_changes(cur: Cursor) -> list[tuple[int, str, str, str | None, int]]:
    """Each user's newest row."""
    cur.execute("SELECT DISTINCT ON (user_id) stream_id, user_id, state, status_msg, last_active_ts"
                " FROM presence_stream ORDER BY user_id, stream_id DESC")
    return cur.fetchall()
