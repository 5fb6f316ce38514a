"""Removing room history: purge history up to a point (Synapse's semantics), and delete a
room entirely. Rows of a room or of purged events are found through the schema itself
(every table with a `room_id` or `event_id` column), so tables added by later features
(relations, search...) are cleaned too, except the ones that must outlive the room."""
from __future__ import annotations

from typing import Callable

from storage import relations as relations_store
from storage import search as search_store
from storage.database import Cursor

# Kept when a room is deleted: moderation and administration records about it.
KEEP_ON_DELETE = frozenset({"content_reports", "blocked_rooms", "admin_tasks", "audit_log"})
# Kept when history is purged: per-event rows that do not hold the event itself (a
# receipt or report still names an event that is gone, as in Synapse), and state.
KEEP_ON_PURGE = KEEP_ON_DELETE | frozenset({"receipts", "room_memberships", "current_state",
                                            "state_group_entries", "forward_extremities", "events"})


def _tables_with(cur: Cursor, column: str) -> list[str]:
    cur.execute("SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND column_name = %s ORDER BY table_name", (column,))
    return [r[0] for r in cur.fetchall()]


def purge_history(cur: Cursor, room_id: str, cutoff_depth: int, local_suffix: str, delete_local: bool,
                  prune: Callable[[str], str]) -> tuple[list[str], list[str]]:
    """Delete the room's non-state events below `cutoff_depth` (only remote senders'
    unless `delete_local`), never a forward extremity. State events stay. An event that
    survives but was redacted by a purged redaction is pruned in place (`prune` maps
    stored JSON to the redacted form), so it stays redacted. Returns (purged, pruned)."""
    sql = ("SELECT e.event_id FROM events e WHERE e.room_id = %s AND e.depth < %s AND e.state_key IS NULL"
           " AND NOT EXISTS (SELECT 1 FROM forward_extremities f WHERE f.room_id = e.room_id"
           " AND f.event_id = e.event_id)")
    params: list = [room_id, cutoff_depth]
    if not delete_local:
        sql += " AND e.sender NOT LIKE %s"
        params.append("%" + local_suffix.replace("_", "\\_").replace("%", "\\%"))
    cur.execute(sql, params)
    purged = [r[0] for r in cur.fetchall()]
    if not purged:
        return [], []
    cur.execute("SELECT event_id, json FROM events WHERE room_id = %s AND redacted_by = ANY(%s)"
                " AND NOT event_id = ANY(%s)", (room_id, purged, purged))
    pruned = []
    for event_id, text in cur.fetchall():
        cur.execute("UPDATE events SET json = %s WHERE event_id = %s", (prune(text), event_id))
        pruned.append(event_id)
    for table in _tables_with(cur, "event_id"):
        if table not in KEEP_ON_PURGE:
            cur.execute(f'DELETE FROM "{table}" WHERE event_id = ANY(%s)', (purged,))
    cur.execute("DELETE FROM events WHERE event_id = ANY(%s)", (purged,))
    return purged, pruned


def delete_room(cur: Cursor, room_id: str) -> int:
    """Every trace of the room (but KEEP_ON_DELETE); returns how many events it had."""
    cur.execute("SELECT count(*) FROM events WHERE room_id = %s", (room_id,))
    count = cur.fetchone()[0]
    with_room = set(_tables_with(cur, "room_id"))
    # Rows that name only an event of the room (edges, auth, transaction ids, ...).
    for table in _tables_with(cur, "event_id"):
        if table not in with_room and table not in KEEP_ON_DELETE and table != "state_group_entries":
            cur.execute(f'DELETE FROM "{table}" t USING events e WHERE e.event_id = t.event_id'
                        " AND e.room_id = %s", (room_id,))
    cur.execute("DELETE FROM state_group_entries s USING state_groups g WHERE g.id = s.state_group"
                " AND g.room_id = %s", (room_id,))
    for table in sorted(with_room - KEEP_ON_DELETE - {"events", "rooms"}):
        cur.execute(f'DELETE FROM "{table}" WHERE room_id = %s', (room_id,))
    cur.execute("DELETE FROM events WHERE room_id = %s", (room_id,))
    cur.execute("DELETE FROM rooms WHERE room_id = %s", (room_id,))
    return count


def user_events_to_erase(cur: Cursor, user_id: str, after: int, limit: int) -> list[tuple[int, str, str, str]]:
    """(stream_ordering, event_id, room_id, json) of events the user sent that are not part
    of a room's current state, in stream order after `after`."""
    cur.execute(
        "SELECT e.stream_ordering, e.event_id, e.room_id, e.json FROM events e WHERE e.sender = %s"
        " AND e.stream_ordering > %s AND NOT EXISTS (SELECT 1 FROM current_state c"
        " WHERE c.event_id = e.event_id) ORDER BY e.stream_ordering LIMIT %s",
        (user_id, after, limit))
    return cur.fetchall()


def replace_json(cur: Cursor, room_id: str, rows: list[tuple[str, str]]) -> None:
    """Store pruned forms of a room's events; like redacted ones, they leave the search
    index and end the relations they made."""
    for event_id, text in rows:
        cur.execute("UPDATE events SET json = %s WHERE event_id = %s", (text, event_id))
    targets = [(event_id, room_id) for event_id, _ in rows]
    search_store.drop(cur, targets)
    relations_store.drop(cur, targets)
