"""Tenant of users (rooms carry theirs in the rooms table, copied from the create event)."""
from __future__ import annotations

from storage.database import Cursor


def user_tenant(cur: Cursor, user_id: str) -> str | None:
    cur.execute("SELECT tenant_id FROM users WHERE user_id = %s", (user_id,))
    row = cur.fetchone()
    return row[0] if row else None


def set_user_tenant(cur: Cursor, user_id: str, tenant_id: str | None) -> bool:
    cur.execute("UPDATE users SET tenant_id = %s WHERE user_id = %s", (tenant_id, user_id))
    return cur.rowcount == 1


def room_tenant(cur: Cursor, room_id: str) -> str | None:
    cur.execute("SELECT tenant_id FROM rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return row[0] if row else None
