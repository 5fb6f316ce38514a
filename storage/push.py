"""Push actions (who was notified of which event, with which actions), the read
positions and unread counts derived from them, pushers, and rate-limit overrides.
Plain cursor functions."""
from __future__ import annotations

import io
import json
from typing import Any, Iterable, NamedTuple

from storage.database import Cursor

# Each event row's push results, set by the persist path before the transaction:
# EventRow.extra[PUSH_ROWS] = [(user_id, thread_id, highlight, actions_json), ...]
PUSH_ROWS = "push_rows"


def _copy_text(value: str) -> str:
    """A value in COPY's text format (thread ids come from event content: escape them)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def insert_push_actions(cur: Cursor, rows: Iterable[Any]) -> None:
    """Writes the push results of a batch of events (storage.events.EventRow) with one
    COPY: a message in a 1,000-member room is 1,000 short rows."""
    buf = io.StringIO()
    write = buf.write
    for row in rows:
        results = row.extra.get(PUSH_ROWS)
        if not results:
            continue
        tail = f"\t{row.stream_ordering}\t{_copy_text(row.room_id)}\t"
        for user_id, thread_id, highlight, actions_json in results:
            write(f"{_copy_text(user_id)}{tail}{_copy_text(thread_id)}\t{'t' if highlight else 'f'}\t"
                  f"{_copy_text(actions_json)}\n")
    if buf.tell():
        buf.seek(0)
        cur.copy_expert("COPY event_push_actions (user_id, stream_ordering, room_id, thread_id,"
                        " highlight, actions) FROM STDIN", buf)


# Read positions: the receipts (m.read and m.read.private, whichever is further), and the
# user's latest join, before which nothing counts (an invite is read by joining).
_READ_POSITIONS = """
    SELECT room_id, thread_id, max(pos) AS pos FROM (
        SELECT r.room_id, r.thread_id, e.stream_ordering AS pos
        FROM receipts r JOIN events e ON e.event_id = r.event_id
        WHERE r.user_id = %(user)s AND r.receipt_type IN ('m.read', 'm.read.private')
        UNION ALL
        SELECT room_id, '', stream_ordering FROM room_memberships
        WHERE user_id = %(user)s AND membership = 'join') AS p
    GROUP BY room_id, thread_id"""


class UnreadSnapshot(NamedTuple):
    """A user's read positions and unread counts as of one database snapshot."""
    positions: list[tuple[str, str, int]]          # (room, receipt thread '' | 'main' | root, stream)
    counts: list[tuple[str, str, int, int]]        # (room, thread, notifications, highlights)
    upto: int                                       # events up to here are included


def load_unread(cur: Cursor, user_id: str) -> UnreadSnapshot:
    """Every read position of the user and the notifications after them, per room and
    thread, in one statement (one snapshot)."""
    cur.execute(f"""
        WITH pos AS ({_READ_POSITIONS}),
        counts AS (
            SELECT a.room_id, a.thread_id, count(*) AS n, count(*) FILTER (WHERE a.highlight) AS h
            FROM event_push_actions a
            LEFT JOIN pos p_all ON p_all.room_id = a.room_id AND p_all.thread_id = ''
            LEFT JOIN pos p_thr ON p_thr.room_id = a.room_id AND p_thr.thread_id = a.thread_id
            WHERE a.user_id = %(user)s
              AND a.stream_ordering > GREATEST(COALESCE(p_all.pos, 0), COALESCE(p_thr.pos, 0))
            GROUP BY a.room_id, a.thread_id)
        SELECT 'p', room_id, thread_id, pos, 0 FROM pos
        UNION ALL SELECT 'c', room_id, thread_id, n, h FROM counts
        UNION ALL SELECT 'u', '', '', (SELECT COALESCE(max(stream_ordering), 0) FROM events), 0""",
                {"user": user_id})
    positions, counts, upto = [], [], 0
    for tag, room_id, thread_id, a, b in cur.fetchall():
        if tag == "p":
            positions.append((room_id, thread_id, a))
        elif tag == "c":
            counts.append((room_id, thread_id, a, b))
        else:
            upto = a
    return UnreadSnapshot(positions, counts, upto)


def count_unread_in_room(cur: Cursor, user_id: str, room_id: str, read_all: int,
                         thread_positions: dict[str, int]) -> tuple[list[tuple[str, int, int]], int]:
    """[(thread, notifications, highlights)] of one room after the given read positions,
    and the stream position the answer is complete up to."""
    threads = list(thread_positions)
    cur.execute("""
        WITH tp AS (SELECT * FROM unnest(%s::text[], %s::bigint[]) AS t(thread_id, pos))
        SELECT a.thread_id, count(*), count(*) FILTER (WHERE a.highlight),
               (SELECT COALESCE(max(stream_ordering), 0) FROM events)
        FROM event_push_actions a LEFT JOIN tp ON tp.thread_id = a.thread_id
        WHERE a.user_id = %s AND a.room_id = %s AND a.stream_ordering > %s
          AND a.stream_ordering > COALESCE(tp.pos, 0)
        GROUP BY a.thread_id""",
                (threads, [thread_positions[t] for t in threads], user_id, room_id, read_all))
    rows = cur.fetchall()
    if not rows:
        cur.execute("SELECT COALESCE(max(stream_ordering), 0) FROM events")
        return [], cur.fetchone()[0]
    return [(t, n, h) for t, n, h, _ in rows], rows[0][3]


def stream_of_event(cur: Cursor, event_id: str) -> int | None:
    cur.execute("SELECT stream_ordering FROM events WHERE event_id = %s", (event_id,))
    row = cur.fetchone()
    return row[0] if row else None


class Notification(NamedTuple):
    stream_ordering: int
    room_id: str
    thread_id: str
    highlight: bool
    actions: list
    received_ts: int
    event_id: str


def notifications(cur: Cursor, user_id: str, before: int | None, limit: int,
                  only_highlight: bool) -> list[Notification]:
    """The user's notifications, newest first, strictly before `before`."""
    cur.execute(
        "SELECT a.stream_ordering, a.room_id, a.thread_id, a.highlight, a.actions, e.received_ts,"
        " e.event_id FROM event_push_actions a JOIN events e ON e.stream_ordering = a.stream_ordering"
        " WHERE a.user_id = %s AND a.stream_ordering < %s" + (" AND a.highlight" if only_highlight else "")
        + " ORDER BY a.stream_ordering DESC LIMIT %s",
        (user_id, before if before is not None else 2 ** 62, limit))
    return [Notification(s, r, t, h, json.loads(a), ts, eid) for s, r, t, h, a, ts, eid in cur.fetchall()]


def notifications_after(cur: Cursor, user_id: str, after: int, limit: int) -> list[Notification]:
    """The user's notifications after `after`, oldest first (what a pusher delivers)."""
    cur.execute(
        "SELECT a.stream_ordering, a.room_id, a.thread_id, a.highlight, a.actions, e.received_ts,"
        " e.event_id FROM event_push_actions a JOIN events e ON e.stream_ordering = a.stream_ordering"
        " WHERE a.user_id = %s AND a.stream_ordering > %s ORDER BY a.stream_ordering LIMIT %s",
        (user_id, after, limit))
    return [Notification(s, r, t, h, json.loads(a), ts, eid) for s, r, t, h, a, ts, eid in cur.fetchall()]


def stored_rules_of(cur: Cursor, user_ids: list[str]) -> dict[str, list[tuple]]:
    """Every listed user's stored push-rule rows (kind, rule_id, rule_json, enabled,
    priority), in one query."""
    cur.execute("SELECT user_id, kind, rule_id, rule_json, enabled, priority FROM push_rules"
                " WHERE user_id = ANY(%s) ORDER BY user_id, kind, priority DESC, rule_id", (user_ids,))
    out: dict[str, list[tuple]] = {}
    for user_id, *rest in cur.fetchall():
        out.setdefault(user_id, []).append(tuple(rest))
    return out


# ---- pushers ---------------------------------------------------------------------------

PUSHER_COLUMNS = ("id, user_id, access_token_hash, kind, app_id, pushkey, app_display_name,"
                  " device_display_name, profile_tag, lang, data_json, pushkey_ts, last_stream")


def all_pushers(cur: Cursor) -> list[tuple]:
    cur.execute(f"SELECT {PUSHER_COLUMNS} FROM pushers ORDER BY id")
    return cur.fetchall()


def pushers_of(cur: Cursor, user_id: str) -> list[tuple]:
    cur.execute(f"SELECT {PUSHER_COLUMNS} FROM pushers WHERE user_id = %s ORDER BY id", (user_id,))
    return cur.fetchall()


def set_pusher(cur: Cursor, user_id: str, token_hash: bytes | None, kind: str, app_id: str,
               pushkey: str, app_display_name: str, device_display_name: str,
               profile_tag: str | None, lang: str, data: dict, now_ms: int, start_stream: int,
               append: bool) -> tuple[tuple, list[int]]:
    """Creates or updates the user's pusher for (app_id, pushkey); unless `append`,
    removes other users' pushers with the same pair (users of the same tenant only).
    Returns the row and the removed ids."""
    removed: list[int] = []
    if not append:
        # Only within the user's own tenant: another organization's pushers are out of reach.
        cur.execute(
            "DELETE FROM pushers WHERE app_id = %s AND pushkey = %s AND user_id <> %s AND user_id IN"
            " (SELECT u.user_id FROM users u, users me WHERE me.user_id = %s"
            "  AND u.tenant_id IS NOT DISTINCT FROM me.tenant_id) RETURNING id",
            (app_id, pushkey, user_id, user_id))
        removed = [r[0] for r in cur.fetchall()]
    cur.execute(
        "INSERT INTO pushers (user_id, access_token_hash, kind, app_id, pushkey, app_display_name,"
        " device_display_name, profile_tag, lang, data_json, pushkey_ts, last_stream)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET access_token_hash = EXCLUDED.access_token_hash,"
        " kind = EXCLUDED.kind, app_display_name = EXCLUDED.app_display_name,"
        " device_display_name = EXCLUDED.device_display_name, profile_tag = EXCLUDED.profile_tag,"
        " lang = EXCLUDED.lang, data_json = EXCLUDED.data_json, pushkey_ts = EXCLUDED.pushkey_ts"
        f" RETURNING {PUSHER_COLUMNS}",
        (user_id, token_hash, kind, app_id, pushkey, app_display_name, device_display_name, profile_tag,
         lang, json.dumps(data), now_ms, start_stream))
    return cur.fetchone(), removed


def delete_pusher(cur: Cursor, user_id: str, app_id: str, pushkey: str) -> list[int]:
    cur.execute("DELETE FROM pushers WHERE user_id = %s AND app_id = %s AND pushkey = %s RETURNING id",
                (user_id, app_id, pushkey))
    return [r[0] for r in cur.fetchall()]


def delete_pusher_by_id(cur: Cursor, pusher_id: int) -> None:
    cur.execute("DELETE FROM pushers WHERE id = %s", (pusher_id,))


def delete_pushers_of_tokens(cur: Cursor, user_id: str, token_hashes: list[bytes]) -> list[int]:
    cur.execute("DELETE FROM pushers WHERE user_id = %s AND access_token_hash = ANY(%s) RETURNING id",
                (user_id, token_hashes))
    return [r[0] for r in cur.fetchall()]


def pusher_delivered(cur: Cursor, pusher_id: int, stream: int) -> None:
    cur.execute("UPDATE pushers SET last_stream = GREATEST(last_stream, %s) WHERE id = %s", (stream, pusher_id))


# ---- rate-limit overrides --------------------------------------------------------------

def all_ratelimit_overrides(cur: Cursor) -> dict[str, tuple[float, float]]:
    cur.execute("SELECT user_id, messages_per_second, burst_count FROM ratelimit_override")
    return {u: (m, b) for u, m, b in cur.fetchall()}


def set_ratelimit_override(cur: Cursor, user_id: str, per_second: float, burst: float) -> None:
    cur.execute("INSERT INTO ratelimit_override (user_id, messages_per_second, burst_count)"
                " VALUES (%s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET"
                " messages_per_second = EXCLUDED.messages_per_second, burst_count = EXCLUDED.burst_count",
                (user_id, per_second, burst))


def delete_ratelimit_override(cur: Cursor, user_id: str) -> bool:
    cur.execute("DELETE FROM ratelimit_override WHERE user_id = %s", (user_id,))
    return cur.rowcount > 0
