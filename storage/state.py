"""Reading room state: state groups (delta chains), current state and membership history."""
from __future__ import annotations

from storage.database import Cursor
from storage.events import EVENT_COLUMNS, to_stored

StateMap = dict[tuple[str, str], str]  # (type, state_key) -> event_id


def get_state_group_map(cur: Cursor, group: int) -> StateMap:
    """Resolve a group by walking its (bounded) delta chain; nearer deltas win."""
    cur.execute(
        "WITH RECURSIVE chain(id, prev_group, n) AS ("
        "  SELECT id, prev_group, 0 FROM state_groups WHERE id = %s"
        "  UNION ALL SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g"
        "  JOIN chain c ON g.id = c.prev_group)"
        " SELECT DISTINCT ON (e.type, e.state_key) e.type, e.state_key, e.event_id"
        " FROM chain c JOIN state_group_entries e ON e.state_group = c.id"
        " ORDER BY e.type, e.state_key, c.n",
        (group,),
    )
    return {(t, sk): eid for t, sk, eid in cur.fetchall()}


def get_state_group_of_event(cur: Cursor, event_id: str) -> int | None:
    cur.execute("SELECT state_group FROM events WHERE event_id = %s", (event_id,))
    row = cur.fetchone()
    return row[0] if row else None


def load_room_head(cur: Cursor, room_id: str) -> dict | None:
    """What the in-memory room cache needs: version, current state (with event JSON),
    forward extremities with their depth and state group."""
    cur.execute("SELECT room_version, is_public FROM rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    if row is None:
        return None
    room_version, is_public = row
    cur.execute(
        f"SELECT {EVENT_COLUMNS} FROM current_state c JOIN events e USING (event_id)"
        " WHERE c.room_id = %s",
        (room_id,),
    )
    state = [to_stored(r) for r in cur.fetchall()]
    cur.execute(
        "SELECT f.event_id, e.depth, e.state_group, g.chain_length, e.stream_ordering"
        " FROM forward_extremities f"
        " JOIN events e USING (event_id) JOIN state_groups g ON g.id = e.state_group"
        " WHERE f.room_id = %s ORDER BY e.depth DESC, e.stream_ordering DESC",
        (room_id,),
    )
    extremities = cur.fetchall()
    # The group of the current state: the newest extremity's, unless state resolution
    # across several extremities (federation) produced one after it.
    latest = max(extremities, key=lambda e: e[4])
    current_group = (latest[2], latest[3])
    cur.execute("SELECT state_group, chain_length, stream_ordering FROM room_state_heads WHERE room_id = %s",
                (room_id,))
    resolved = cur.fetchone()
    if resolved is not None and resolved[2] >= latest[4]:
        current_group = (resolved[0], resolved[1])
    cur.execute("SELECT tenant_id FROM remote_rooms WHERE room_id = %s", (room_id,))
    remote = cur.fetchone()
    return {"room_version": room_version, "is_public": is_public, "state": state,
            "extremities": extremities, "state_group": current_group,
            "remote_tenant": (remote[0],) if remote else None}


def rooms_for_user(cur: Cursor, user_id: str, memberships: tuple[str, ...] = ("join",)) -> list[str]:
    cur.execute(
        "SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = %s"
        " AND membership = ANY(%s)",
        (user_id, list(memberships)),
    )
    return [r[0] for r in cur.fetchall()]


def membership_history(cur: Cursor, room_id: str, user_id: str) -> list[tuple[int, str]]:
    """(stream_ordering, membership) of every membership event of the user in the room."""
    cur.execute(
        "SELECT stream_ordering, membership FROM room_memberships WHERE room_id = %s"
        " AND user_id = %s ORDER BY stream_ordering",
        (room_id, user_id),
    )
    return [(so, m) for so, m in cur.fetchall()]


def state_history(cur: Cursor, room_id: str, event_type: str) -> list[tuple[int, str]]:
    """(stream_ordering, json) of every state event of one type (with state_key '')."""
    cur.execute(
        "SELECT stream_ordering, json FROM events WHERE room_id = %s AND type = %s"
        " AND state_key = '' ORDER BY stream_ordering",
        (room_id, event_type),
    )
    return cur.fetchall()


def forget_room(cur: Cursor, user_id: str, room_id: str) -> None:
    cur.execute("INSERT INTO forgotten_rooms (user_id, room_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING", (user_id, room_id))


def unforget_room(cur: Cursor, user_id: str, room_id: str) -> None:
    cur.execute("DELETE FROM forgotten_rooms WHERE user_id = %s AND room_id = %s", (user_id, room_id))


def visibility_inputs(cur: Cursor, event_ids: list[str], user_id: str) -> dict[str, tuple[str | None, str | None]]:
    """For each event: (the user's membership, the room's history_visibility) in the state
    group of the event (the state after it). For state-based history visibility."""
    if not event_ids:
        return {}
    cur.execute("SELECT event_id, state_group FROM events WHERE event_id = ANY(%s)", (list(event_ids),))
    groups = dict(cur.fetchall())
    if not groups:
        return {}
    cur.execute(
        "WITH RECURSIVE chain(root, id, prev_group, n) AS ("
        "  SELECT id, id, prev_group, 0 FROM state_groups WHERE id = ANY(%s)"
        "  UNION ALL SELECT c.root, g.id, g.prev_group, c.n + 1 FROM state_groups g"
        "  JOIN chain c ON g.id = c.prev_group)"
        " SELECT DISTINCT ON (c.root, s.type) c.root, s.type, e.json::json->'content'"
        " FROM chain c JOIN state_group_entries s ON s.state_group = c.id"
        " JOIN events e ON e.event_id = s.event_id"
        " WHERE (s.type = 'm.room.member' AND s.state_key = %s)"
        "    OR (s.type = 'm.room.history_visibility' AND s.state_key = '')"
        " ORDER BY c.root, s.type, c.n",
        (list(set(groups.values())), user_id))
    by_group: dict[int, dict[str, dict]] = {}
    for root, etype, content in cur.fetchall():
        by_group.setdefault(root, {})[etype] = content if isinstance(content, dict) else {}
    out = {}
    for event_id, group in groups.items():
        found = by_group.get(group, {})
        membership = found.get("m.room.member", {}).get("membership")
        visibility = found.get("m.room.history_visibility", {}).get("history_visibility")
        out[event_id] = (membership if isinstance(membership, str) else None,
                         visibility if isinstance(visibility, str) else None)
    return out
