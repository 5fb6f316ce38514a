"""The few bulk reads sliding sync needs beyond /sync's: each room's latest "bump" event,
the senders of a user's leave events (kicked or left by themselves), and a user's room
tags and `m.direct` rooms. Each is one statement whatever the number of rooms."""
from __future__ import annotations

import json

from storage.database import Cursor


def bump_positions(cur: Cursor, room_ids: list[str], types: list[str]) -> dict[str, int]:
    """room -> stream position of its latest event of one of `types` (rooms without one
    are left out). Walks each room's events backwards on (room_id, stream_ordering)."""
    if not room_ids:
        return {}
    cur.execute(
        "SELECT r.room_id, e.stream_ordering FROM unnest(%s::text[]) AS r(room_id)"
        " CROSS JOIN LATERAL (SELECT stream_ordering FROM events e WHERE e.room_id = r.room_id"
        " AND e.type = ANY(%s) ORDER BY e.stream_ordering DESC LIMIT 1) e",
        (room_ids, types))
    return dict(cur.fetchall())


def membership_senders(cur: Cursor, user_id: str, room_ids: list[str]) -> dict[str, str]:
    """room -> sender of the user's current member event in it."""
    if not room_ids:
        return {}
    cur.execute("SELECT c.room_id, e.sender FROM current_state c JOIN events e USING (event_id)"
                " WHERE c.type = 'm.room.member' AND c.state_key = %s AND c.room_id = ANY(%s)",
                (user_id, room_ids))
    return dict(cur.fetchall())


def tags_and_direct(cur: Cursor, user_id: str) -> tuple[dict[str, dict], dict | None]:
    """(room -> m.tag content, the m.direct content or None)."""
    cur.execute("SELECT room_id, type, content FROM account_data WHERE user_id = %s"
                " AND ((room_id <> '' AND type = 'm.tag') OR (room_id = '' AND type = 'm.direct'))",
                (user_id,))
    tags: dict[str, dict] = {}
    direct = None
    for room_id, data_type, content in cur.fetchall():
        value = json.loads(content) if isinstance(content, str) else content
        if data_type == "m.direct":
            direct = value
        else:
            tags[room_id] = value
    return tags, direct
