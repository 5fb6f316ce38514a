"""Rooms as the admin API lists them: statistics computed from current state (no
separate statistics tables to keep in step), blocked rooms."""
from __future__ import annotations

from typing import Any

from storage.database import Cursor

# order_by value -> (SQL column of the stats below, ascending when dir=f), as Synapse sorts.
ROOM_ORDER = {
    "name": ("s.name", True), "alphabetical": ("s.name", True),
    "canonical_alias": ("s.canonical_alias", True),
    "joined_members": ("s.joined_members", False), "size": ("s.joined_members", False),
    "joined_local_members": ("s.joined_local_members", False),
    "version": ("s.room_version", False), "creator": ("s.creator", True),
    "encryption": ("s.encryption", True), "federatable": ("s.federatable", True),
    "public": ("s.is_public", True), "join_rules": ("s.join_rules", True),
    "guest_access": ("s.guest_access", True), "history_visibility": ("s.history_visibility", True),
    "state_events": ("s.state_events", False),
}

_STATE_FIELD = "max((e.json::jsonb) -> 'content' ->> %s) FILTER (WHERE c.type = %s)"

# Per room: what the list and details show. Only the handful of state events whose
# content is read are joined to their JSON.
_STATS = f"""
SELECT r.room_id, r.room_version, r.creator, r.is_public, r.tenant_id,
  {_STATE_FIELD} AS name,
  {_STATE_FIELD} AS canonical_alias,
  {_STATE_FIELD} AS topic,
  {_STATE_FIELD} AS avatar,
  {_STATE_FIELD} AS encryption,
  {_STATE_FIELD} AS join_rules,
  {_STATE_FIELD} AS guest_access,
  {_STATE_FIELD} AS history_visibility,
  {_STATE_FIELD} AS room_type,
  {_STATE_FIELD} AS replacement_room,
  bool_or(c.type = 'm.room.tombstone') AS tombstoned,
  COALESCE(bool_and((e.json::jsonb) -> 'content' -> 'm.federate' IS DISTINCT FROM 'false'::jsonb)
           FILTER (WHERE c.type = 'm.room.create'), TRUE) AS federatable,
  count(*) FILTER (WHERE c.type = 'm.room.member' AND c.membership = 'join') AS joined_members,
  count(*) FILTER (WHERE c.type = 'm.room.member' AND c.membership = 'join'
                   AND c.state_key LIKE %s) AS joined_local_members,
  count(c.room_id) AS state_events
FROM rooms r
LEFT JOIN current_state c ON c.room_id = r.room_id
LEFT JOIN events e ON e.event_id = c.event_id AND c.type IN (
  'm.room.name', 'm.room.canonical_alias', 'm.room.topic', 'm.room.avatar', 'm.room.encryption',
  'm.room.join_rules', 'm.room.guest_access', 'm.room.history_visibility', 'm.room.create',
  'm.room.tombstone') AND c.state_key = ''
{{where}}
GROUP BY r.room_id
"""
_STATS_PARAMS = ("name", "m.room.name", "alias", "m.room.canonical_alias", "topic", "m.room.topic",
                 "url", "m.room.avatar", "algorithm", "m.room.encryption", "join_rule", "m.room.join_rules",
                 "guest_access", "m.room.guest_access", "history_visibility", "m.room.history_visibility",
                 "type", "m.room.create", "replacement_room", "m.room.tombstone")
_LIST_KEYS = ("room_id", "name", "canonical_alias", "joined_members", "joined_local_members", "version",
              "creator", "encryption", "federatable", "public", "join_rules", "guest_access",
              "history_visibility", "state_events", "room_type")


def _row_dict(row: dict) -> dict[str, Any]:
    out = {k: row[k] for k in _LIST_KEYS if k in row}
    out["version"] = row["room_version"]
    out["public"] = bool(row["is_public"])
    return out


def _stats_sql(where: str) -> str:
    return _STATS.format(where=where)


def list_rooms(cur: Cursor, server_name: str, start: int, limit: int, order_by: str, backwards: bool,
               search_term: str | None, public_rooms: bool | None, empty_rooms: bool | None,
               tenant: str | None, scoped: bool) -> tuple[list[dict], int]:
    """A page of rooms and the total matching; `scoped`: only rooms of `tenant`."""
    column, ascending = ROOM_ORDER[order_by]
    if backwards:
        ascending = not ascending
    direction = "ASC" if ascending else "DESC"
    where, params = [], []
    if search_term:
        where.append("(lower(s.name) LIKE %s OR lower(s.canonical_alias) LIKE %s OR s.room_id = %s)")
        term = search_term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params += [f"%{term}%", f"#%{term}%:%", search_term]
    if public_rooms is not None:
        where.append("s.is_public = %s")
        params.append(public_rooms)
    if empty_rooms is not None:
        where.append("s.joined_members = 0" if empty_rooms else "s.joined_members <> 0")
    inner_where = "WHERE r.tenant_id = %s" if scoped else ""
    inner_params = [tenant] if scoped else []
    outer = ("WHERE " + " AND ".join(where)) if where else ""
    base = (f"WITH s AS ({_stats_sql(inner_where)}) ")
    all_params = list(_STATS_PARAMS) + [f"%:{server_name}"] + inner_params
    cur.execute(base + f"SELECT count(*) FROM s {outer}", all_params + params)
    total = cur.fetchone()[0]
    cur.execute(base + f"SELECT * FROM s {outer} ORDER BY {column} {direction} NULLS LAST,"
                f" s.room_id {direction} LIMIT %s OFFSET %s", all_params + params + [limit, start])
    names = [d[0] for d in cur.description]
    return [_row_dict(dict(zip(names, r))) for r in cur.fetchall()], total


def room_details(cur: Cursor, server_name: str, room_id: str) -> dict | None:
    cur.execute(_stats_sql("WHERE r.room_id = %s"), list(_STATS_PARAMS) + [f"%:{server_name}", room_id])
    row = cur.fetchone()
    if row is None:
        return None
    data = dict(zip([d[0] for d in cur.description], row))
    out = _row_dict(data)
    out.update(topic=data["topic"], avatar=data["avatar"], tombstoned=bool(data["tombstoned"]),
               replacement_room=data["replacement_room"], tenant_id=data["tenant_id"])
    cur.execute(
        "SELECT count(*) FROM devices d JOIN current_state c ON c.state_key = d.user_id"
        " WHERE c.room_id = %s AND c.type = 'm.room.member' AND c.membership = 'join'", (room_id,))
    out["joined_local_devices"] = cur.fetchone()[0]
    # Forgotten: every local user with a membership there has forgotten it (and there is one).
    cur.execute(
        "SELECT count(*), count(f.user_id) FROM current_state c LEFT JOIN forgotten_rooms f"
        " ON f.room_id = c.room_id AND f.user_id = c.state_key"
        " WHERE c.room_id = %s AND c.type = 'm.room.member' AND c.state_key LIKE %s",
        (room_id, f"%:{server_name}"))
    members, forgotten = cur.fetchone()
    out["forgotten"] = members > 0 and members == forgotten
    return out


def room_tenant(cur: Cursor, room_id: str) -> tuple[bool, str | None]:
    """(exists, tenant) from the rooms table."""
    cur.execute("SELECT tenant_id FROM rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return (row is not None, row[0] if row else None)


def joined_members(cur: Cursor, room_id: str) -> list[str]:
    cur.execute("SELECT state_key FROM current_state WHERE room_id = %s AND type = 'm.room.member'"
                " AND membership = 'join' ORDER BY state_key", (room_id,))
    return [r[0] for r in cur.fetchall()]


def local_members(cur: Cursor, room_id: str, server_name: str) -> list[tuple[str, str]]:
    """(user_id, membership) of local users who are joined, invited or knocking."""
    cur.execute("SELECT state_key, membership FROM current_state WHERE room_id = %s"
                " AND type = 'm.room.member' AND membership IN ('join', 'invite', 'knock')"
                " AND state_key LIKE %s ORDER BY state_key", (room_id, f"%:{server_name}"))
    return [(u, m) for u, m in cur.fetchall()]


def forward_extremities(cur: Cursor, room_id: str) -> list[dict]:
    cur.execute("SELECT f.event_id, e.state_group, e.depth, e.received_ts FROM forward_extremities f"
                " JOIN events e USING (event_id) WHERE f.room_id = %s ORDER BY e.depth DESC", (room_id,))
    return [{"event_id": e, "state_group": sg, "depth": d, "received_ts": ts} for e, sg, d, ts in cur.fetchall()]


# ---- blocked rooms -------------------------------------------------------------------

def all_blocked(cur: Cursor) -> dict[str, str]:
    cur.execute("SELECT room_id, user_id FROM blocked_rooms")
    return dict(cur.fetchall())


def block_room(cur: Cursor, room_id: str, user_id: str, tenant_id: str | None, now_ms: int) -> None:
    cur.execute("INSERT INTO blocked_rooms (room_id, user_id, tenant_id, ts) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (room_id) DO NOTHING", (room_id, user_id, tenant_id, now_ms))


def unblock_room(cur: Cursor, room_id: str) -> None:
    cur.execute("DELETE FROM blocked_rooms WHERE room_id = %s", (room_id,))


def blocked_tenant(cur: Cursor, room_id: str) -> tuple[bool, str | None]:
    cur.execute("SELECT tenant_id FROM blocked_rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return (row is not None, row[0] if row else None)
