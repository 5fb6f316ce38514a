"""Server-side room key backups: numbered versions per user (deleted ones are kept as
tombstones so their numbers are never reused) and the encrypted session keys in each.
Every write takes a per-user advisory lock, so "is this the current version?" and the
write that depends on it cannot interleave with a new version being created."""
from __future__ import annotations

import json
from typing import Any, Callable

from storage.database import Cursor

_LOCK_CLASS = 7274  # first half of the two-key advisory lock; the second is the user


def _lock(cur: Cursor, user_id: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, user_id))


def _count(cur: Cursor, user_id: str, version: int) -> int:
    cur.execute("SELECT count(*) FROM room_key_backup_keys WHERE user_id = %s AND version = %s",
                (user_id, version))
    return int(cur.fetchone()[0])


def current_version(cur: Cursor, user_id: str) -> int | None:
    cur.execute("SELECT max(version) FROM room_key_backup_versions WHERE user_id = %s"
                " AND NOT deleted", (user_id,))
    return cur.fetchone()[0]


def create_version(cur: Cursor, user_id: str, algorithm: str, auth_data_json: str) -> int:
    _lock(cur, user_id)
    cur.execute("SELECT COALESCE(max(version), 0) + 1 FROM room_key_backup_versions"
                " WHERE user_id = %s", (user_id,))
    version = cur.fetchone()[0]
    cur.execute("INSERT INTO room_key_backup_versions (user_id, version, algorithm, auth_data)"
                " VALUES (%s, %s, %s, %s)", (user_id, version, algorithm, auth_data_json))
    return version


def get_version(cur: Cursor, user_id: str, version: int | None) -> dict[str, Any] | None:
    """A live version (the current one when `version` is None) with its key count."""
    if version is None:
        version = current_version(cur, user_id)
        if version is None:
            return None
    cur.execute("SELECT algorithm, auth_data, etag FROM room_key_backup_versions"
                " WHERE user_id = %s AND version = %s AND NOT deleted", (user_id, version))
    row = cur.fetchone()
    if row is None:
        return None
    return {"version": version, "algorithm": row[0], "auth_data": json.loads(row[1]),
            "etag": row[2], "count": _count(cur, user_id, version)}


def update_auth_data(cur: Cursor, user_id: str, version: int, auth_data_json: str) -> None:
    cur.execute("UPDATE room_key_backup_versions SET auth_data = %s WHERE user_id = %s"
                " AND version = %s AND NOT deleted", (auth_data_json, user_id, version))


def delete_version(cur: Cursor, user_id: str, version: int) -> str:
    """'deleted', 'already' (deleted before) or 'missing' (never existed)."""
    _lock(cur, user_id)
    cur.execute("SELECT deleted FROM room_key_backup_versions WHERE user_id = %s AND version = %s",
                (user_id, version))
    row = cur.fetchone()
    if row is None:
        return "missing"
    if row[0]:
        return "already"
    cur.execute("UPDATE room_key_backup_versions SET deleted = TRUE WHERE user_id = %s"
                " AND version = %s", (user_id, version))
    cur.execute("DELETE FROM room_key_backup_keys WHERE user_id = %s AND version = %s",
                (user_id, version))
    return "deleted"


def get_keys(cur: Cursor, user_id: str, version: int, room_id: str | None = None,
             session_id: str | None = None) -> list[tuple[str, str, dict]] | None:
    """(room_id, session_id, key data) in a live version; None if there is no such version."""
    cur.execute("SELECT 1 FROM room_key_backup_versions WHERE user_id = %s AND version = %s"
                " AND NOT deleted", (user_id, version))
    if cur.fetchone() is None:
        return None
    sql, args = _keys_scope("SELECT room_id, session_id, key_json FROM room_key_backup_keys",
                            user_id, version, room_id, session_id)
    cur.execute(sql, args)
    return [(r, s, json.loads(j)) for r, s, j in cur.fetchall()]


def put_keys(cur: Cursor, user_id: str, version: int, keys: list[tuple[str, str, dict]],
             should_replace: Callable[[dict, dict], bool]) -> tuple[int, int]:
    """Store (room_id, session_id, key data) into `version`, which the caller checked is
    current under this transaction's lock (see `lock_current`). An existing key is only
    replaced when `should_replace(new, old)`. Returns (etag, count)."""
    cur.execute(
        "SELECT room_id, session_id, key_json FROM room_key_backup_keys"
        " WHERE user_id = %s AND version = %s AND (room_id, session_id) IN"
        " (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (user_id, version, [k[0] for k in keys], [k[1] for k in keys]))
    stored = {(r, s): json.loads(j) for r, s, j in cur.fetchall()}
    changed = False
    for room_id, session_id, data in keys:
        old = stored.get((room_id, session_id))
        if old is not None and not should_replace(data, old):
            continue
        cur.execute(
            "INSERT INTO room_key_backup_keys (user_id, version, room_id, session_id, key_json)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (user_id, version, room_id, session_id)"
            " DO UPDATE SET key_json = EXCLUDED.key_json",
            (user_id, version, room_id, session_id, json.dumps(data)))
        stored[(room_id, session_id)] = data
        changed = True
    return _bump_etag(cur, user_id, version, changed), _count(cur, user_id, version)


def lock_current(cur: Cursor, user_id: str) -> int | None:
    """Take the user's backup lock and return the current version."""
    _lock(cur, user_id)
    return current_version(cur, user_id)


def delete_keys(cur: Cursor, user_id: str, version: int, room_id: str | None = None,
                session_id: str | None = None) -> tuple[int, int] | None:
    """Delete keys from a live version; (etag, count), or None if there is no such version."""
    _lock(cur, user_id)
    cur.execute("SELECT 1 FROM room_key_backup_versions WHERE user_id = %s AND version = %s"
                " AND NOT deleted", (user_id, version))
    if cur.fetchone() is None:
        return None
    sql, args = _keys_scope("DELETE FROM room_key_backup_keys", user_id, version, room_id, session_id)
    cur.execute(sql, args)
    return _bump_etag(cur, user_id, version, cur.rowcount > 0), _count(cur, user_id, version)


def _bump_etag(cur: Cursor, user_id: str, version: int, changed: bool) -> int:
    if changed:
        cur.execute("UPDATE room_key_backup_versions SET etag = etag + 1 WHERE user_id = %s"
                    " AND version = %s RETURNING etag", (user_id, version))
    else:
        cur.execute("SELECT etag FROM room_key_backup_versions WHERE user_id = %s AND version = %s",
                    (user_id, version))
    return cur.fetchone()[0]


def _keys_scope(statement: str, user_id: str, version: int, room_id: str | None,
                session_id: str | None) -> tuple[str, list[Any]]:
    """`statement` narrowed to one backup version, and optionally a room and a session."""
    sql = statement + " WHERE user_id = %s AND version = %s"
    args: list[Any] = [user_id, version]
    if room_id is not None:
        sql += " AND room_id = %s"
        args.append(room_id)
    if session_id is not None:
        sql += " AND session_id = %s"
        args.append(session_id)
    return sql, args
