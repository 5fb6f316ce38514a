"""Federation storage: other servers' keys, inbound transaction ids, the outbound
queues, and the parts of persisting remote events the local path does not need."""
from __future__ import annotations

from storage.database import Cursor, execute_values


# ---- server keys -------------------------------------------------------------------

def store_server_keys(cur: Cursor, rows: list[tuple]) -> None:
    """rows: (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, key_json).
    A key's longest known validity wins."""
    execute_values(
        cur,
        "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts,"
        " fetched_ts, key_json) VALUES %s ON CONFLICT (server_name, key_id) DO UPDATE SET"
        " valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,"
        " fetched_ts = EXCLUDED.fetched_ts, key_json = EXCLUDED.key_json"
        " WHERE server_keys.valid_until_ts <= EXCLUDED.valid_until_ts",
        rows,
    )


def get_server_keys(cur: Cursor, server_name: str) -> list[tuple]:
    """(key_id, verify_key, valid_until_ts, expired_ts, key_json) of one server."""
    cur.execute("SELECT key_id, verify_key, valid_until_ts, expired_ts, key_json FROM server_keys"
                " WHERE server_name = %s", (server_name,))
    return cur.fetchall()
