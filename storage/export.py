"""Reads for data export, in pages by stream order (keyset paging: each page continues
where the last one stopped, so an export is one pass however big it is)."""
from __future__ import annotations

import json

from storage.database import Cursor
from storage.events import EVENT_COLUMNS, StoredEvent, to_stored


def room_events_page(cur: Cursor, room_id: str, after: int, limit: int) -> list[tuple[str, StoredEvent]]:
    """(room_id, event) pairs, in stream order."""
    cur.execute(f"SELECT e.room_id, {EVENT_COLUMNS} FROM events e WHERE e.room_id = %s AND e.stream_ordering > %s"
                " ORDER BY e.stream_ordering LIMIT %s", (room_id, after, limit))
    return [(r[0], to_stored(r[1:])) for r in cur.fetchall()]


def user_events_page(cur: Cursor, user_id: str, after: int, limit: int) -> list[tuple[str, StoredEvent]]:
    cur.execute(f"SELECT e.room_id, {EVENT_COLUMNS} FROM events e WHERE e.sender = %s AND e.stream_ordering > %s"
                " ORDER BY e.stream_ordering LIMIT %s", (user_id, after, limit))
    return [(r[0], to_stored(r[1:])) for r in cur.fetchall()]


def room_versions(cur: Cursor, room_ids: list[str]) -> dict[str, str]:
    cur.execute("SELECT room_id, room_version FROM rooms WHERE room_id = ANY(%s)", (room_ids,))
    return dict(cur.fetchall())


def user_data(cur: Cursor, user_id: str) -> dict:
    """Profile, devices (no tokens or keys), account data and room memberships."""
    cur.execute("SELECT user_id, displayname, avatar_url, created_ts, is_admin, is_guest, deactivated, erased,"
                " tenant_id FROM users WHERE user_id = %s", (user_id,))
    u = cur.fetchone()
    profile = dict(zip(("user_id", "displayname", "avatar_url", "creation_ts", "admin", "is_guest",
                        "deactivated", "erased", "tenant_id"), u)) if u else None
    cur.execute("SELECT device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent FROM devices"
                " WHERE user_id = %s ORDER BY device_id", (user_id,))
    devices = [dict(zip(("device_id", "display_name", "last_seen_ts", "last_seen_ip", "last_seen_user_agent"), r))
               for r in cur.fetchall()]
    cur.execute("SELECT room_id, type, content FROM account_data WHERE user_id = %s ORDER BY room_id, type",
                (user_id,))
    account_data = [{"room_id": r or None, "type": t, "content": json.loads(c)} for r, t, c in cur.fetchall()]
    cur.execute("SELECT room_id, membership FROM current_state WHERE type = 'm.room.member' AND state_key = %s"
                " ORDER BY room_id", (user_id,))
    rooms = [{"room_id": r, "membership": m} for r, m in cur.fetchall()]
    return {"profile": profile, "devices": devices, "account_data": account_data, "rooms": rooms}
