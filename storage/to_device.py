"""To-device messages: queued per target device, deleted once the device syncs past them."""
from __future__ import annotations

import json

from storage.database import Cursor, execute_values


def claim_txn(cur: Cursor, user_id: str, device_id: str, txn_id: str) -> bool:
    """False if this sendToDevice transaction was already processed."""
    cur.execute("INSERT INTO to_device_txns (user_id, device_id, txn_id) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING", (user_id, device_id, txn_id))
    return cur.rowcount == 1


def devices_of(cur: Cursor, user_id: str) -> list[str]:
    cur.execute("SELECT device_id FROM devices WHERE user_id = %s", (user_id,))
    return [r[0] for r in cur.fetchall()]


def enqueue(cur: Cursor, rows: list[tuple[int, str, str, dict]]) -> None:
    execute_values(cur, "INSERT INTO to_device_messages (stream_id, user_id, device_id, message_json)"
                   " VALUES %s", [(s, u, d, json.dumps(m)) for s, u, d, m in rows])


def fetch_and_ack(cur: Cursor, user_id: str, device_id: str, acked_upto: int, upto: int,
                  limit: int) -> list[tuple[int, dict]]:
    cur.execute("DELETE FROM to_device_messages WHERE user_id = %s AND device_id = %s"
                " AND stream_id <= %s", (user_id, device_id, acked_upto))
    cur.execute(
        "SELECT stream_id, message_json FROM to_device_messages WHERE user_id = %s AND device_id = %s"
        " AND stream_id > %s AND stream_id <= %s ORDER BY stream_id LIMIT %s",
        (user_id, device_id, acked_upto, upto, limit))
    return [(s, json.loads(m)) for s, m in cur.fetchall()]


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM to_device_messages")
    return cur.fetchone()[0]


def pending_max(cur: Cursor, user_id: str, device_id: str) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM to_device_messages WHERE user_id = %s"
                " AND device_id = %s", (user_id, device_id))
    return cur.fetchone()[0]


def changes_between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str, str]]:
    """(stream_id, user_id, device_id) of messages queued with after < stream_id <= upto
    and not yet acknowledged."""
    cur.execute("SELECT stream_id, user_id, device_id FROM to_device_messages WHERE stream_id > %s"
                " AND stream_id <= %s ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return cur.fetchall()
