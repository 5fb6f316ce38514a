"""Users as the admin API lists and changes them."""
from __future__ import annotations

from typing import Any

from storage.database import Cursor

# order_by value -> SQL expression; Synapse's fields we do not have sort as equal
# (then by name, which always breaks ties).
USER_ORDER = {
    "name": "u.user_id", "is_guest": "u.is_guest", "admin": "u.is_admin", "user_type": "NULL",
    "deactivated": "u.deactivated", "shadow_banned": "NULL", "displayname": "u.displayname",
    "avatar_url": "u.avatar_url", "creation_ts": "u.created_ts", "last_seen_ts": "ls.last_seen_ts",
    "locked": "NULL",
}

_LAST_SEEN = "LEFT JOIN (SELECT user_id, max(last_seen_ts) AS last_seen_ts FROM devices GROUP BY user_id) ls" \
             " ON ls.user_id = u.user_id"


def _like(term: str) -> str:
    return term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_users(cur: Cursor, start: int, limit: int, user_id: str | None, name: str | None,
               guests: bool, deactivated: bool | None, admins: bool | None, order_by: str,
               backwards: bool, tenant: str | None, scoped: bool) -> tuple[list[dict], int]:
    where, params = [], []
    if name:
        where.append("(lower(u.user_id) LIKE %s OR lower(u.displayname) LIKE %s)")
        params += ["@%" + _like(name) + "%:%", "%" + _like(name) + "%"]
    elif user_id:
        where.append("lower(u.user_id) LIKE %s")
        params.append("%" + _like(user_id) + "%")
    if not guests:
        where.append("NOT u.is_guest")
    if deactivated is not None:
        where.append("u.deactivated = %s")
        params.append(deactivated)
    if admins is not None:
        where.append("u.is_admin = %s")
        params.append(admins)
    if scoped:
        where.append("u.tenant_id = %s")
        params.append(tenant)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    cur.execute(f"SELECT count(*) FROM users u {clause}", params)
    total = cur.fetchone()[0]
    direction = "DESC" if backwards else "ASC"
    cur.execute(
        "SELECT u.user_id, u.is_guest, u.is_admin, u.deactivated, u.erased, u.displayname, u.avatar_url,"
        f" u.created_ts, ls.last_seen_ts FROM users u {_LAST_SEEN} {clause}"
        f" ORDER BY {USER_ORDER[order_by]} {direction}, u.user_id ASC LIMIT %s OFFSET %s",
        params + [limit, start])
    users = [{"name": r[0], "is_guest": r[1], "admin": r[2], "user_type": None, "deactivated": r[3],
              "erased": r[4], "shadow_banned": False, "displayname": r[5], "avatar_url": r[6],
              "creation_ts": r[7], "last_seen_ts": r[8], "locked": False}
             for r in cur.fetchall()]
    return users, total


def get_user(cur: Cursor, user_id: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT u.user_id, u.is_guest, u.is_admin, u.deactivated, u.erased, u.displayname, u.avatar_url,"
        f" u.created_ts, ls.last_seen_ts, u.appservice_id, u.tenant_id, u.admin_tenant"
        f" FROM users u {_LAST_SEEN} WHERE u.user_id = %s", (user_id,))
    r = cur.fetchone()
    if r is None:
        return None
    return {"name": r[0], "is_guest": r[1], "admin": r[2], "deactivated": r[3], "erased": r[4],
            "displayname": r[5], "avatar_url": r[6], "created_ts": r[7], "last_seen_ts": r[8],
            "appservice_id": r[9], "tenant_id": r[10], "admin_tenant": r[11]}


def set_admin(cur: Cursor, user_id: str, admin: bool) -> None:
    cur.execute("UPDATE users SET is_admin = %s WHERE user_id = %s", (admin, user_id))


def admin_tenant(cur: Cursor, user_id: str) -> str | None:
    cur.execute("SELECT admin_tenant FROM users WHERE user_id = %s AND NOT deactivated", (user_id,))
    row = cur.fetchone()
    return row[0] if row else None


def set_admin_tenant(cur: Cursor, user_id: str, tenant_id: str | None) -> bool:
    cur.execute("UPDATE users SET admin_tenant = %s WHERE user_id = %s", (tenant_id, user_id))
    return cur.rowcount == 1


def reactivate(cur: Cursor, user_id: str) -> None:
    cur.execute("UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = %s", (user_id,))


def mark_erased(cur: Cursor, user_id: str) -> None:
    cur.execute("UPDATE users SET erased = TRUE, displayname = NULL, avatar_url = NULL WHERE user_id = %s",
                (user_id,))


def memberships(cur: Cursor, user_id: str) -> dict[str, str]:
    cur.execute("SELECT room_id, membership FROM current_state WHERE type = 'm.room.member'"
                " AND state_key = %s", (user_id,))
    return dict(cur.fetchall())


def devices(cur: Cursor, user_id: str) -> list[dict]:
    cur.execute("SELECT device_id, display_name, last_seen_ip, last_seen_user_agent, last_seen_ts"
                " FROM devices WHERE user_id = %s ORDER BY device_id", (user_id,))
    return [{"device_id": d, "display_name": n, "last_seen_ip": ip, "last_seen_user_agent": ua,
             "last_seen_ts": ts, "user_id": user_id} for d, n, ip, ua, ts in cur.fetchall()]


def add_puppet_token(cur: Cursor, token_hash: bytes, user_id: str, admin_id: str, now_ms: int,
                     valid_until_ms: int | None) -> None:
    """A token for `user_id` that belongs to none of their devices (a device id no device
    has), so it shows up in no device list."""
    cur.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, puppeted_by, valid_until_ms)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (token_hash, user_id, "admin-login-" + token_hash[:6].hex(), now_ms, admin_id, valid_until_ms))


def delete_puppet_tokens_by(cur: Cursor, admin_id: str) -> list[bytes]:
    cur.execute("DELETE FROM access_tokens WHERE puppeted_by = %s RETURNING token_hash", (admin_id,))
    return [bytes(r[0]) for r in cur.fetchall()]
