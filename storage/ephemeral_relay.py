"""Typing, receipts and presence relayed by the stream owner to the process running the
application-service job (homeserver/ephemeral_relay.py): rows in id order, announced as
the stream `ephemeral` in the transaction that writes them."""
from __future__ import annotations

from storage import replication as repl_store
from storage.database import Cursor, execute_values

STREAM = "ephemeral"


def append(cur: Cursor, events: list[str], now_ms: int, instance: str, keep_ms: int | None) -> int:
    """Store `events` (JSON texts), drop rows older than `keep_ms` (None: not this time),
    announce the highest id."""
    execute_values(cur, "INSERT INTO ephemeral_relay (event, created_ts) VALUES %s",
                   [(e, now_ms) for e in events])
    cur.execute("SELECT currval(pg_get_serial_sequence('ephemeral_relay', 'id'))")
    top = cur.fetchone()[0]
    if keep_ms is not None:
        cur.execute("DELETE FROM ephemeral_relay WHERE created_ts < %s", (now_ms - keep_ms,))
    repl_store.announce(cur, STREAM, instance, top)
    return top


def latest(cur: Cursor) -> int:
    return max(repl_store.positions(cur, STREAM).values(), default=0)


def between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
    """The first `limit` rows with after < id <= upto."""
    cur.execute("SELECT id, event FROM ephemeral_relay WHERE id > %s AND id <= %s ORDER BY id LIMIT %s",
                (after, upto, limit))
    return cur.fetchall()
