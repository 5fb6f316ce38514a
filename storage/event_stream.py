"""The legacy event stream (GET /events): one user's rooms' events after a position, in
stream order, in one statement."""
from __future__ import annotations

from storage.database import Cursor
from storage.events import EVENT_COLUMNS, StoredEvent, to_stored


def events_after(cur: Cursor, bounds: list[tuple[str, int]], after: int,
                 limit: int) -> list[tuple[str, StoredEvent]]:
    """(room_id, event) for each (room_id, upto) in `bounds`: the events with
    after < stream <= upto, oldest first across all rooms, at most `limit`."""
    if not bounds:
        return []
    values = ",".join(["(%s, %s::bigint)"] * len(bounds))
    params: list = [v for b in bounds for v in b]
    cur.execute(
        f"SELECT r.room_id, {EVENT_COLUMNS} FROM (VALUES {values}) AS r(room_id, hi)"
        " JOIN events e ON e.room_id = r.room_id AND e.stream_ordering > %s AND e.stream_ordering <= r.hi"
        " ORDER BY e.stream_ordering LIMIT %s", params + [after, limit])
    return [(row[0], to_stored(row[1:])) for row in cur.fetchall()]
