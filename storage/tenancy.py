"""Tenant of users (rooms carry theirs in the rooms table, copied from the create event)."""
from __future__ import annotations

from storage.database import Cursor


def user_tenants(cur: Cursor, user_ids: list[str]) -> dict[str, str | None]:
    """The tenant of each of `user_ids` that exists (missing users are left out)."""
    if not user_ids:
        return {}
    cur.execute("SELECT user_id, tenant_id FROM users WHERE user_id = ANY(%s)", (list(user_ids),))
    return {user_id: tenant for user_id, tenant in cur.fetchall()}


def set_user_tenant(cur: Cursor, user_id: str, tenant_id: str | None) -> bool:
    cur.execute("UPDATE users SET tenant_id = %s WHERE user_id = %s", (tenant_id, user_id))
    return cur.rowcount == 1



def room_tenant(cur: Cursor, room_id: str) -> str | None:
    cur.execute("SELECT tenant_id FROM rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return row[0] if row else None
