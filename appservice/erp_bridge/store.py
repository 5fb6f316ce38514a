"""The bridge's tables: plain functions that take a cursor (run them through
Database.run, which puts each call in one transaction off the reactor thread)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from appservice.erp_bridge.db import Cursor


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Tenant:
    tenant_id: str
    name: str
    bot_user_id: str
    space_id: str
    general_room_id: str


@dataclass
class User:
    erp_user_id: str
    user_id: str
    tenant_id: str
    display_name: str
    email: str | None
    active: bool


@dataclass
class Object:
    object_type: str
    object_id: str
    tenant_id: str
    room_id: str
    alias: str
    title: str
    fields: dict
    participants: list[str]


@dataclass
class Room:
    room_id: str
    tenant_id: str
    kind: str
    object_type: str | None
    object_id: str | None
    alias: str


# ---- tenants ---------------------------------------------------------------------------

def get_tenant(cur: Cursor, tenant_id: str) -> Tenant | None:
    cur.execute("SELECT tenant_id, name, bot_user_id, space_id, general_room_id "
                "FROM erp_bridge.tenants WHERE tenant_id = %s", (tenant_id,))
    row = cur.fetchone()
    return Tenant(*row) if row else None


def get_tenant_by_bot(cur: Cursor, bot_user_id: str) -> Tenant | None:
    cur.execute("SELECT tenant_id, name, bot_user_id, space_id, general_room_id "
                "FROM erp_bridge.tenants WHERE bot_user_id = %s", (bot_user_id,))
    row = cur.fetchone()
    return Tenant(*row) if row else None


def upsert_tenant(cur: Cursor, t: Tenant) -> None:
    ts = now_ms()
    cur.execute(
        "INSERT INTO erp_bridge.tenants (tenant_id, name, bot_user_id, space_id, general_room_id,"
        " created_ts, updated_ts) VALUES (%s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET name = EXCLUDED.name, "
        " space_id = EXCLUDED.space_id, general_room_id = EXCLUDED.general_room_id, "
        " updated_ts = EXCLUDED.updated_ts",
        (t.tenant_id, t.name, t.bot_user_id, t.space_id, t.general_room_id, ts, ts))


# ---- users -----------------------------------------------------------------------------

_USER_COLS = "erp_user_id, user_id, tenant_id, display_name, email, active"


def get_user(cur: Cursor, erp_user_id: str) -> User | None:
    cur.execute(f"SELECT {_USER_COLS} FROM erp_bridge.users WHERE erp_user_id = %s", (erp_user_id,))
    row = cur.fetchone()
    return User(*row) if row else None


def get_users(cur: Cursor, erp_user_ids: list[str]) -> dict[str, User]:
    if not erp_user_ids:
        return {}
    cur.execute(f"SELECT {_USER_COLS} FROM erp_bridge.users WHERE erp_user_id = ANY(%s)",
                (list(erp_user_ids),))
    return {row[0]: User(*row) for row in cur.fetchall()}


def get_user_by_mxid(cur: Cursor, user_id: str) -> User | None:
    cur.execute(f"SELECT {_USER_COLS} FROM erp_bridge.users WHERE user_id = %s", (user_id,))
    row = cur.fetchone()
    return User(*row) if row else None


def upsert_user(cur: Cursor, u: User) -> None:
    ts = now_ms()
    cur.execute(
        f"INSERT INTO erp_bridge.users ({_USER_COLS}, created_ts, updated_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (erp_user_id) DO UPDATE SET display_name = EXCLUDED.display_name, "
        " email = EXCLUDED.email, active = EXCLUDED.active, updated_ts = EXCLUDED.updated_ts",
        (u.erp_user_id, u.user_id, u.tenant_id, u.display_name, u.email, u.active, ts, ts))


# ---- objects and rooms -----------------------------------------------------------------

_OBJECT_COLS = "object_type, object_id, tenant_id, room_id, alias, title, fields, participants"


def get_object(cur: Cursor, object_type: str, object_id: str) -> Object | None:
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects "
                "WHERE object_type = %s AND object_id = %s", (object_type, object_id))
    row = cur.fetchone()
    return Object(*row) if row else None


def objects_with_participant(cur: Cursor, erp_user_id: str) -> list[Object]:
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects WHERE participants @> %s::jsonb "
                "ORDER BY object_type, object_id", (json.dumps([erp_user_id]),))
    return [Object(*row) for row in cur.fetchall()]


def upsert_object(cur: Cursor, o: Object) -> None:
    ts = now_ms()
    cur.execute(
        f"INSERT INTO erp_bridge.objects ({_OBJECT_COLS}, created_ts, updated_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (object_type, object_id) DO UPDATE SET title = EXCLUDED.title, "
        " fields = EXCLUDED.fields, participants = EXCLUDED.participants, "
        " room_id = EXCLUDED.room_id, alias = EXCLUDED.alias, updated_ts = EXCLUDED.updated_ts",
        (o.object_type, o.object_id, o.tenant_id, o.room_id, o.alias, o.title,
         json.dumps(o.fields), json.dumps(o.participants), ts, ts))


def record_room(cur: Cursor, r: Room) -> None:
    cur.execute(
        "INSERT INTO erp_bridge.rooms (room_id, tenant_id, kind, object_type, object_id, alias,"
        " created_ts) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (room_id) DO NOTHING",
        (r.room_id, r.tenant_id, r.kind, r.object_type, r.object_id, r.alias, now_ms()))


def get_room(cur: Cursor, room_id: str) -> Room | None:
    cur.execute("SELECT room_id, tenant_id, kind, object_type, object_id, alias "
                "FROM erp_bridge.rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return Room(*row) if row else None


def get_room_by_alias(cur: Cursor, alias: str) -> Room | None:
    cur.execute("SELECT room_id, tenant_id, kind, object_type, object_id, alias "
                "FROM erp_bridge.rooms WHERE alias = %s", (alias,))
    row = cur.fetchone()
    return Room(*row) if row else None


def erp_ids_of(cur: Cursor, user_ids: list[str]) -> dict[str, str]:
    """Matrix user id -> ERP user id, for those that are bridge users."""
    if not user_ids:
        return {}
    cur.execute("SELECT user_id, erp_user_id FROM erp_bridge.users WHERE user_id = ANY(%s)",
                (list(user_ids),))
    return dict(cur.fetchall())


def user_exists(cur: Cursor, user_id: str) -> bool:
    cur.execute("SELECT 1 FROM erp_bridge.users WHERE user_id = %s "
                "UNION ALL SELECT 1 FROM erp_bridge.tenants WHERE bot_user_id = %s LIMIT 1",
                (user_id, user_id))
    return cur.fetchone() is not None


# ---- messages posted by the ERP --------------------------------------------------------

@dataclass
class ErpMessage:
    room_id: str
    sender_user_id: str
    request_hash: str
    hs_txn_id: str
    event_id: str | None


def get_erp_message(cur: Cursor, object_type: str, object_id: str, txn_id: str) -> ErpMessage | None:
    cur.execute("SELECT room_id, sender_user_id, request_hash, hs_txn_id, event_id "
                "FROM erp_bridge.erp_messages "
                "WHERE object_type = %s AND object_id = %s AND txn_id = %s",
                (object_type, object_id, txn_id))
    row = cur.fetchone()
    return ErpMessage(*row) if row else None


def claim_erp_message(cur: Cursor, object_type: str, object_id: str, txn_id: str,
                      msg: ErpMessage) -> ErpMessage:
    """Insert the message row unless one exists; return the row now stored."""
    cur.execute(
        "INSERT INTO erp_bridge.erp_messages (object_type, object_id, txn_id, room_id,"
        " sender_user_id, request_hash, hs_txn_id, event_id, created_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, %s) ON CONFLICT DO NOTHING",
        (object_type, object_id, txn_id, msg.room_id, msg.sender_user_id, msg.request_hash,
         msg.hs_txn_id, now_ms()))
    stored = get_erp_message(cur, object_type, object_id, txn_id)
    assert stored is not None
    return stored


def set_erp_message_event(cur: Cursor, object_type: str, object_id: str, txn_id: str,
                          event_id: str) -> None:
    cur.execute("UPDATE erp_bridge.erp_messages SET event_id = %s "
                "WHERE object_type = %s AND object_id = %s AND txn_id = %s",
                (event_id, object_type, object_id, txn_id))


# ---- application-service transactions and the webhook outbox ----------------------------

def take_transaction(cur: Cursor, txn_id: str, event_count: int) -> bool:
    """Record an AS transaction id; False if it was already taken in."""
    cur.execute("INSERT INTO erp_bridge.as_transactions (txn_id, received_ts, event_count) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", (txn_id, now_ms(), event_count))
    return cur.rowcount == 1


def prune_transactions(cur: Cursor, older_than_ms: int) -> int:
    cur.execute("DELETE FROM erp_bridge.as_transactions WHERE received_ts < %s",
                (now_ms() - older_than_ms,))
    return cur.rowcount


def next_outbox_seq(cur: Cursor) -> int:
    cur.execute("SELECT nextval('erp_bridge.outbox_seq')")
    return cur.fetchone()[0]


def enqueue_outbox(cur: Cursor, seq: int, room_id: str, event_id: str, body: str) -> bool:
    cur.execute("INSERT INTO erp_bridge.outbox (seq, room_id, event_id, body, created_ts) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                (seq, room_id, event_id, body, now_ms()))
    return cur.rowcount == 1


def outbox_rooms(cur: Cursor) -> list[str]:
    cur.execute("SELECT DISTINCT room_id FROM erp_bridge.outbox")
    return [r[0] for r in cur.fetchall()]


@dataclass
class OutboxItem:
    seq: int
    room_id: str
    event_id: str
    body: str
    attempts: int


def outbox_head(cur: Cursor, room_id: str) -> OutboxItem | None:
    cur.execute("SELECT seq, room_id, event_id, body, attempts FROM erp_bridge.outbox "
                "WHERE room_id = %s ORDER BY seq LIMIT 1", (room_id,))
    row = cur.fetchone()
    return OutboxItem(*row) if row else None


def outbox_delivered(cur: Cursor, seq: int) -> None:
    cur.execute("DELETE FROM erp_bridge.outbox WHERE seq = %s", (seq,))


def outbox_failed(cur: Cursor, seq: int, error: str) -> None:
    cur.execute("UPDATE erp_bridge.outbox SET attempts = attempts + 1, last_error = %s "
                "WHERE seq = %s", (error[:1000], seq))
