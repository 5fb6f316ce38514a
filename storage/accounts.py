"""Users, devices and access tokens (stored as SHA-256 hashes)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from storage import e2e_keys
from storage.database import Cursor, like_escape


@dataclass(frozen=True)
class TokenOwner:
    user_id: str
    device_id: str
    is_admin: bool
    deactivated: bool
    is_guest: bool = False
    valid_until_ms: int | None = None  # tokens an admin made with "login as user" may expire

    def expired(self) -> bool:
        return self.valid_until_ms is not None and time.time() * 1000 >= self.valid_until_ms


def create_user(cur: Cursor, user_id: str, password_hash: str | None, is_admin: bool,
                now_ms: int, displayname: str | None) -> bool:
    """Insert a user; False if the id is taken."""
    cur.execute(
        "INSERT INTO users (user_id, password_hash, is_admin, created_ts, displayname)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id) DO NOTHING",
        (user_id, password_hash, is_admin, now_ms, displayname),
    )
    return cur.rowcount == 1


def set_guest(cur: Cursor, user_id: str) -> None:
    cur.execute("UPDATE users SET is_guest = TRUE WHERE user_id = %s", (user_id,))


def upgrade_guest(cur: Cursor, user_id: str, password_hash: str | None) -> list[bytes]:
    """A guest becomes a full account; returns its token hashes (cached as a guest's)."""
    cur.execute("UPDATE users SET is_guest = FALSE, password_hash = %s WHERE user_id = %s AND is_guest",
                (password_hash, user_id))
    cur.execute("SELECT token_hash FROM access_tokens WHERE user_id = %s", (user_id,))
    return [bytes(r[0]) for r in cur.fetchall()]


def guests_among(cur: Cursor, user_ids: list[str]) -> list[str]:
    cur.execute("SELECT user_id FROM users WHERE is_guest AND user_id = ANY(%s)", (user_ids,))
    return [r[0] for r in cur.fetchall()]


def user_exists(cur: Cursor, user_id: str) -> bool:
    cur.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return cur.fetchone() is not None


def get_user(cur: Cursor, user_id: str) -> dict | None:
    cur.execute(
        "SELECT user_id, password_hash, is_admin, deactivated, displayname, avatar_url"
        " FROM users WHERE user_id = %s",
        (user_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    keys = ("user_id", "password_hash", "is_admin", "deactivated", "displayname", "avatar_url")
    return dict(zip(keys, row))


def set_password_hash(cur: Cursor, user_id: str, password_hash: str | None) -> None:
    cur.execute("UPDATE users SET password_hash = %s WHERE user_id = %s", (password_hash, user_id))


def deactivate_user(cur: Cursor, user_id: str) -> None:
    cur.execute(
        "UPDATE users SET deactivated = TRUE, password_hash = NULL, displayname = NULL,"
        " avatar_url = NULL WHERE user_id = %s",
        (user_id,),
    )
    delete_all_devices(cur, user_id)


def set_profile_field(cur: Cursor, user_id: str, field: str, value: str | None) -> None:
    assert field in ("displayname", "avatar_url")
    cur.execute(f"UPDATE users SET {field} = %s WHERE user_id = %s", (value, user_id))


def upsert_device(cur: Cursor, user_id: str, device_id: str, display_name: str | None) -> bool:
    """Create the device, or give an existing one a new display name; True if the device
    is new or its name changed (what other users' clients see of it)."""
    cur.execute("SELECT display_name FROM devices WHERE user_id = %s AND device_id = %s FOR UPDATE",
                (user_id, device_id))
    old = cur.fetchone()
    cur.execute(
        "INSERT INTO devices (user_id, device_id, display_name) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET display_name ="
        " COALESCE(EXCLUDED.display_name, devices.display_name)",
        (user_id, device_id, display_name),
    )
    return old is None or (display_name is not None and display_name != old[0])


def device_exists(cur: Cursor, user_id: str, device_id: str) -> bool:
    cur.execute("SELECT 1 FROM devices WHERE user_id = %s AND device_id = %s", (user_id, device_id))
    return cur.fetchone() is not None


def add_access_token(cur: Cursor, token_hash: bytes, user_id: str, device_id: str,
                     now_ms: int) -> None:
    cur.execute(
        "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts)"
        " VALUES (%s, %s, %s, %s)",
        (token_hash, user_id, device_id, now_ms),
    )


def get_token_owner(cur: Cursor, token_hash: bytes) -> TokenOwner | None:
    cur.execute(
        "SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, u.is_guest, t.valid_until_ms"
        " FROM access_tokens t"
        " JOIN users u USING (user_id) WHERE t.token_hash = %s",
        (token_hash,),
    )
    row = cur.fetchone()
    return TokenOwner(*row) if row else None


def token_hashes_of(cur: Cursor, user_id: str) -> list[bytes]:
    cur.execute("SELECT token_hash FROM access_tokens WHERE user_id = %s", (user_id,))
    return [bytes(r[0]) for r in cur.fetchall()]


def delete_devices(cur: Cursor, user_id: str, device_ids: list[str]) -> list[bytes]:
    """Delete devices and their tokens; return the deleted token hashes (for cache eviction)."""
    cur.execute(
        "DELETE FROM access_tokens WHERE user_id = %s AND device_id = ANY(%s) RETURNING token_hash",
        (user_id, device_ids),
    )
    hashes = [bytes(r[0]) for r in cur.fetchall()]
    cur.execute("DELETE FROM devices WHERE user_id = %s AND device_id = ANY(%s)",
                (user_id, device_ids))
    e2e_keys.delete_device_keys(cur, user_id, device_ids)
    return hashes


def delete_all_devices(cur: Cursor, user_id: str, except_device: str | None = None) -> list[bytes]:
    cur.execute("SELECT device_id FROM devices WHERE user_id = %s AND device_id IS DISTINCT FROM %s",
                (user_id, except_device))
    return delete_devices(cur, user_id, [r[0] for r in cur.fetchall()])


def list_devices(cur: Cursor, user_id: str) -> list[dict]:
    cur.execute(
        "SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
        " WHERE user_id = %s ORDER BY device_id",
        (user_id,),
    )
    return [
        {"device_id": d, "display_name": n, "last_seen_ts": ts, "last_seen_ip": ip}
        for d, n, ts, ip in cur.fetchall()
    ]


def rename_device(cur: Cursor, user_id: str, device_id: str, display_name: str) -> bool:
    cur.execute("UPDATE devices SET display_name = %s WHERE user_id = %s AND device_id = %s",
                (display_name, user_id, device_id))
    return cur.rowcount == 1


def search_users(cur: Cursor, term: str, limit: int, searcher: str, all_users: bool) -> list[dict]:
    """Substring search over user ids and display names of active users of the searcher's
    tenant (or, for a searcher without one, of users without one)."""
    pattern = "%" + like_escape(term.lower()) + "%"
    shared_clause = "" if all_users else (
        " AND (u.user_id = %(me)s OR EXISTS (SELECT 1 FROM current_state a"
        " JOIN current_state b ON a.room_id = b.room_id"
        " WHERE a.type = 'm.room.member' AND a.state_key = %(me)s AND a.membership = 'join'"
        " AND b.type = 'm.room.member' AND b.state_key = u.user_id AND b.membership = 'join'))"
    )
    cur.execute(
        "SELECT u.user_id, u.displayname, u.avatar_url FROM users u"
        " WHERE NOT u.deactivated AND (lower(u.user_id) LIKE %(p)s OR lower(u.displayname) LIKE %(p)s)"
        " AND u.tenant_id IS NOT DISTINCT FROM (SELECT tenant_id FROM users WHERE user_id = %(me)s)"
        + shared_clause + " ORDER BY u.user_id LIMIT %(limit)s",
        {"p": pattern, "limit": limit, "me": searcher},
    )
    return [{"user_id": u, "display_name": d, "avatar_url": a} for u, d, a in cur.fetchall()]
