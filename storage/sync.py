"""The bounded queries /sync needs: recent timelines of many rooms in one statement, and
state for rooms being sent in full."""
from __future__ import annotations

from storage.database import Cursor
from storage.events import EVENT_COLUMNS, NO_FILTER, FilterLists, StoredEvent, filter_sql, to_stored


def timelines(cur: Cursor, ranges: list[tuple[str, int, int]], limit: int,
              filters: FilterLists = NO_FILTER) -> dict[str, list[StoredEvent]]:
    """For each (room_id, after, upto): the newest `limit` events with after < stream <= upto,
    oldest first. One statement for every room."""
    if not ranges:
        return {}
    params: list = []
    values = ",".join(["(%s, %s::bigint, %s::bigint)"] * len(ranges))
    for r in ranges:
        params.extend(r)
    filter_params: list = []
    fsql = filter_sql(filters, filter_params)
    cur.execute(
        f"SELECT r.room_id, {EVENT_COLUMNS} FROM (VALUES {values}) AS r(room_id, lo, hi)"
        f" CROSS JOIN LATERAL (SELECT * FROM events e WHERE e.room_id = r.room_id"
        f" AND e.stream_ordering > r.lo AND e.stream_ordering <= r.hi {fsql}"
        f" ORDER BY e.stream_ordering DESC LIMIT %s) e",
        params + filter_params + [limit],
    )
    out: dict[str, list[StoredEvent]] = {}
    for row in cur.fetchall():
        out.setdefault(row[0], []).append(to_stored(row[1:]))
    for events in out.values():
        events.reverse()
    return out


def membership_histories(cur: Cursor, user_id: str, room_ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    cur.execute("SELECT room_id, stream_ordering, membership FROM room_memberships"
                " WHERE user_id = %s AND room_id = ANY(%s) ORDER BY stream_ordering",
                (user_id, room_ids))
    out: dict[str, list[tuple[int, str]]] = {}
    for room_id, so, m in cur.fetchall():
        out.setdefault(room_id, []).append((so, m))
    return out


def visibility_histories(cur: Cursor, room_ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    cur.execute("SELECT room_id, stream_ordering, json::json->'content'->>'history_visibility'"
                " FROM events WHERE room_id = ANY(%s) AND type = 'm.room.history_visibility'"
                " AND state_key = '' ORDER BY stream_ordering", (room_ids,))
    out: dict[str, list[tuple[int, str]]] = {}
    for room_id, so, vis in cur.fetchall():
        out.setdefault(room_id, []).append((so, vis or "shared"))
    return out


def state_at_stream(cur: Cursor, room_id: str, stream: int) -> dict[tuple[str, str], str]:
    """State of a room as of a stream position (for rooms the user has left)."""
    cur.execute("SELECT state_group FROM events WHERE room_id = %s AND stream_ordering <= %s"
                " ORDER BY stream_ordering DESC LIMIT 1", (room_id, stream))
    row = cur.fetchone()
    if row is None:
        return {}
    from storage.state import get_state_group_map
    return get_state_group_map(cur, row[0])
