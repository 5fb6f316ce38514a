"""End-to-end encryption keys: device identity keys, one-time and fallback keys,
cross-signing keys and the signatures uploaded for them. Key objects are stored as the
JSON text the route layer hands over."""
from __future__ import annotations

import json
from typing import Any

from storage.database import Cursor, execute_values


class OneTimeKeyConflict(Exception):
    """An uploaded one-time key reuses the id of a stored key with different contents."""

    def __init__(self, algorithm: str, key_id: str) -> None:
        super().__init__(f"{algorithm}:{key_id}")
        self.algorithm = algorithm
        self.key_id = key_id


# ---- device keys -------------------------------------------------------------------

def set_device_keys(cur: Cursor, user_id: str, device_id: str, key_json: str) -> bool:
    """Store a device's identity keys; True when they differ from what was stored."""
    cur.execute("SELECT key_json FROM e2e_device_keys WHERE user_id = %s AND device_id = %s"
                " FOR UPDATE", (user_id, device_id))
    row = cur.fetchone()
    if row is not None and json.loads(row[0]) == json.loads(key_json):
        return False
    cur.execute(
        "INSERT INTO e2e_device_keys (user_id, device_id, key_json) VALUES (%s, %s, %s)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = EXCLUDED.key_json",
        (user_id, device_id, key_json))
    return True


def device_keys_of_users(cur: Cursor, user_ids: list[str]) -> list[tuple[str, str, str, str | None]]:
    """(user_id, device_id, key_json, display_name) of every existing device with keys."""
    cur.execute(
        "SELECT k.user_id, k.device_id, k.key_json, d.display_name FROM e2e_device_keys k"
        " JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id"
        " WHERE k.user_id = ANY(%s)", (user_ids,))
    return cur.fetchall()


def delete_device_keys(cur: Cursor, user_id: str, device_ids: list[str]) -> None:
    """Forget every key of these devices, and the signatures made on or by them."""
    for table in ("e2e_device_keys", "e2e_one_time_keys", "e2e_fallback_keys"):
        cur.execute(f"DELETE FROM {table} WHERE user_id = %s AND device_id = ANY(%s)",
                    (user_id, device_ids))
    cur.execute("DELETE FROM e2e_signatures WHERE target_user_id = %s AND target_key_id = ANY(%s)",
                (user_id, device_ids))
    cur.execute("DELETE FROM e2e_signatures WHERE signer_user_id = %s AND signer_key_id = ANY(%s)",
                (user_id, ["ed25519:" + d for d in device_ids]))


# ---- one-time and fallback keys ------------------------------------------------------

def add_one_time_keys(cur: Cursor, user_id: str, device_id: str,
                      keys: list[tuple[str, str, str]]) -> None:
    """Store (algorithm, key_id, key_json) rows. Re-uploading an identical key is a no-op;
    a different key under a stored id raises OneTimeKeyConflict (nothing is written)."""
    if not keys:
        return
    cur.execute(
        "SELECT algorithm, key_id, key_json FROM e2e_one_time_keys"
        " WHERE user_id = %s AND device_id = %s AND (algorithm, key_id) IN"
        " (SELECT * FROM unnest(%s::text[], %s::text[]))",
        (user_id, device_id, [k[0] for k in keys], [k[1] for k in keys]))
    stored = {(a, k): j for a, k, j in cur.fetchall()}
    for algorithm, key_id, key_json in keys:
        old = stored.get((algorithm, key_id))
        if old is not None and json.loads(old) != json.loads(key_json):
            raise OneTimeKeyConflict(algorithm, key_id)
    execute_values(
        cur, "INSERT INTO e2e_one_time_keys (user_id, device_id, algorithm, key_id, key_json)"
        " VALUES %s ON CONFLICT DO NOTHING",
        [(user_id, device_id, a, k, j) for a, k, j in keys])


def set_fallback_key(cur: Cursor, user_id: str, device_id: str, algorithm: str, key_id: str,
                     key_json: str) -> None:
    """One fallback key per algorithm: a new key replaces the old one and starts unused;
    re-uploading the same key keeps its used flag."""
    cur.execute(
        "INSERT INTO e2e_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)"
        " VALUES (%s, %s, %s, %s, %s, FALSE)"
        " ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET"
        " used = e2e_fallback_keys.used AND e2e_fallback_keys.key_id = EXCLUDED.key_id"
        "        AND e2e_fallback_keys.key_json = EXCLUDED.key_json,"
        " key_id = EXCLUDED.key_id, key_json = EXCLUDED.key_json",
        (user_id, device_id, algorithm, key_id, key_json))


def one_time_key_counts(cur: Cursor, user_id: str, device_id: str) -> dict[str, int]:
    cur.execute("SELECT algorithm, count(*) FROM e2e_one_time_keys WHERE user_id = %s"
                " AND device_id = %s GROUP BY algorithm", (user_id, device_id))
    return {a: int(n) for a, n in cur.fetchall()}


def unused_fallback_key_types(cur: Cursor, user_id: str, device_id: str) -> list[str]:
    cur.execute("SELECT algorithm FROM e2e_fallback_keys WHERE user_id = %s AND device_id = %s"
                " AND NOT used ORDER BY algorithm", (user_id, device_id))
    return [r[0] for r in cur.fetchall()]


def claim_keys(cur: Cursor, wanted: list[tuple[str, str, str]]
               ) -> list[tuple[str, str, str, str, str]]:
    """For each (user_id, device_id, algorithm): take the oldest one-time key, each exactly
    once even under concurrent claims (the row is locked and deleted; others skip it), or
    else the fallback key, marked used. Returns (user, device, algorithm, key_id, key_json)."""
    out = []
    for user_id, device_id, algorithm in wanted:
        cur.execute(
            "DELETE FROM e2e_one_time_keys WHERE user_id = %s AND device_id = %s"
            " AND algorithm = %s AND key_id = ("
            "   SELECT key_id FROM e2e_one_time_keys WHERE user_id = %s AND device_id = %s"
            "   AND algorithm = %s ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING key_id, key_json",
            (user_id, device_id, algorithm, user_id, device_id, algorithm))
        row = cur.fetchone()
        if row is None:
            cur.execute("UPDATE e2e_fallback_keys SET used = TRUE WHERE user_id = %s"
                        " AND device_id = %s AND algorithm = %s RETURNING key_id, key_json",
                        (user_id, device_id, algorithm))
            row = cur.fetchone()
        if row is not None:
            out.append((user_id, device_id, algorithm, row[0], row[1]))
    return out


# ---- cross-signing keys and signatures -------------------------------------------------

def cross_signing_keys_of_users(cur: Cursor, user_ids: list[str]) -> dict[str, dict[str, str]]:
    """user_id -> key_type (master, self_signing, user_signing) -> key_json."""
    cur.execute("SELECT user_id, key_type, key_json FROM e2e_cross_signing_keys"
                " WHERE user_id = ANY(%s)", (user_ids,))
    out: dict[str, dict[str, str]] = {}
    for user_id, key_type, key_json in cur.fetchall():
        out.setdefault(user_id, {})[key_type] = key_json
    return out


def set_cross_signing_keys(cur: Cursor, user_id: str, keys: dict[str, tuple[str, str]]) -> None:
    """Store key_type -> (public_key, key_json). When a key is replaced, the uploaded
    signatures tied to the old key (on the old master, or made by an old self- or
    user-signing key) are dropped."""
    old = {t: json.loads(j) for t, j in cross_signing_keys_of_users(cur, [user_id]).get(user_id, {}).items()}
    for key_type, (public_key, key_json) in keys.items():
        old_public = _public_key(old.get(key_type))
        if old_public is not None and old_public != public_key:
            if key_type == "master":
                cur.execute("DELETE FROM e2e_signatures WHERE target_user_id = %s"
                            " AND target_key_id = %s", (user_id, old_public))
            cur.execute("DELETE FROM e2e_signatures WHERE signer_user_id = %s AND signer_key_id = %s",
                        (user_id, "ed25519:" + old_public))
        cur.execute(
            "INSERT INTO e2e_cross_signing_keys (user_id, key_type, key_json) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = EXCLUDED.key_json",
            (user_id, key_type, key_json))


def _public_key(key: dict[str, Any] | None) -> str | None:
    if not isinstance(key, dict) or not isinstance(key.get("keys"), dict):
        return None
    for value in key["keys"].values():
        return value
    return None


def signatures_on(cur: Cursor, user_ids: list[str]) -> list[tuple[str, str, str, str, str]]:
    """(signer_user_id, signer_key_id, target_user_id, target_key_id, signature) of every
    uploaded signature on these users' keys."""
    cur.execute("SELECT signer_user_id, signer_key_id, target_user_id, target_key_id, signature"
                " FROM e2e_signatures WHERE target_user_id = ANY(%s)", (user_ids,))
    return cur.fetchall()


def add_signatures(cur: Cursor, rows: list[tuple[str, str, str, str, str]]) -> None:
    """Store (signer_user_id, signer_key_id, target_user_id, target_key_id, signature)."""
    execute_values(
        cur, "INSERT INTO e2e_signatures (signer_user_id, signer_key_id, target_user_id,"
        " target_key_id, signature) VALUES %s ON CONFLICT (signer_user_id, signer_key_id,"
        " target_user_id, target_key_id) DO UPDATE SET signature = EXCLUDED.signature", rows)


def device_ids_of(cur: Cursor, user_id: str) -> list[str]:
    cur.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
    return [r[0] for r in cur.fetchall()]
