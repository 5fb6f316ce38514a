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
    state: str = "active"


@dataclass
class User:
    erp_user_id: str
    user_id: str
    tenant_id: str
    display_name: str
    email: str | None
    active: bool
    state: str = "active"       # active, inactive, deleting, deleted
    erase: bool = False


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
    state: str = "open"


@dataclass
class Room:
    room_id: str
    tenant_id: str
    kind: str
    object_type: str | None
    object_id: str | None
    alias: str
    legacy_alias: str | None = None
    indexed: bool = True


# ---- tenants ---------------------------------------------------------------------------

_TENANT_COLS = "tenant_id, name, bot_user_id, space_id, general_room_id, state"


def get_tenant(cur: Cursor, tenant_id: str) -> Tenant | None:
    cur.execute(f"SELECT {_TENANT_COLS} FROM erp_bridge.tenants WHERE tenant_id = %s", (tenant_id,))
    row = cur.fetchone()
    return Tenant(*row) if row else None


def get_tenant_by_bot(cur: Cursor, bot_user_id: str) -> Tenant | None:
    cur.execute(f"SELECT {_TENANT_COLS} FROM erp_bridge.tenants WHERE bot_user_id = %s", (bot_user_id,))
    row = cur.fetchone()
    return Tenant(*row) if row else None


def upsert_tenant(cur: Cursor, t: Tenant) -> None:
    ts = now_ms()
    cur.execute(
        "INSERT INTO erp_bridge.tenants (tenant_id, name, bot_user_id, space_id, general_room_id,"
        " state, created_ts, updated_ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant_id) DO UPDATE SET name = EXCLUDED.name, "
        " space_id = EXCLUDED.space_id, general_room_id = EXCLUDED.general_room_id, "
        " state = EXCLUDED.state, updated_ts = EXCLUDED.updated_ts",
        (t.tenant_id, t.name, t.bot_user_id, t.space_id, t.general_room_id, t.state, ts, ts))


def set_tenant_state(cur: Cursor, tenant_id: str, state: str) -> None:
    cur.execute("UPDATE erp_bridge.tenants SET state = %s, updated_ts = %s WHERE tenant_id = %s",
                (state, now_ms(), tenant_id))


def tenant_counts(cur: Cursor, tenant_id: str) -> dict:
    cur.execute("SELECT state, count(*) FROM erp_bridge.users WHERE tenant_id = %s GROUP BY state",
                (tenant_id,))
    users = dict(cur.fetchall())
    cur.execute("SELECT state, count(*) FROM erp_bridge.objects WHERE tenant_id = %s GROUP BY state",
                (tenant_id,))
    objects = dict(cur.fetchall())
    return {"users": users, "objects": objects}


# ---- users -----------------------------------------------------------------------------

_USER_COLS = "erp_user_id, user_id, tenant_id, display_name, email, active, state, erase"


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


def list_users(cur: Cursor, tenant_id: str, after: str | None, limit: int) -> list[User]:
    cur.execute(f"SELECT {_USER_COLS} FROM erp_bridge.users WHERE tenant_id = %s "
                "AND (%s::text IS NULL OR erp_user_id > %s) ORDER BY erp_user_id LIMIT %s",
                (tenant_id, after, after, limit))
    return [User(*row) for row in cur.fetchall()]


def tenant_users(cur: Cursor, tenant_id: str) -> list[User]:
    cur.execute(f"SELECT {_USER_COLS} FROM erp_bridge.users WHERE tenant_id = %s ORDER BY erp_user_id",
                (tenant_id,))
    return [User(*row) for row in cur.fetchall()]


def upsert_user(cur: Cursor, u: User) -> None:
    ts = now_ms()
    cur.execute(
        f"INSERT INTO erp_bridge.users ({_USER_COLS}, created_ts, updated_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (erp_user_id) DO UPDATE SET display_name = EXCLUDED.display_name, "
        " email = EXCLUDED.email, active = EXCLUDED.active, state = EXCLUDED.state, "
        " erase = EXCLUDED.erase, updated_ts = EXCLUDED.updated_ts",
        (u.erp_user_id, u.user_id, u.tenant_id, u.display_name, u.email, u.active, u.state,
         u.erase, ts, ts))


def set_user_state(cur: Cursor, erp_user_id: str, state: str, erase: bool | None = None) -> None:
    cur.execute("UPDATE erp_bridge.users SET state = %s, active = %s, erase = coalesce(%s, erase), "
                "updated_ts = %s WHERE erp_user_id = %s",
                (state, state == "active", erase, now_ms(), erp_user_id))


def forget_user_details(cur: Cursor, erp_user_id: str) -> None:
    """Erasure: the bridge's own copy of the person's data goes too."""
    cur.execute("UPDATE erp_bridge.users SET display_name = '', email = NULL, updated_ts = %s "
                "WHERE erp_user_id = %s", (now_ms(), erp_user_id))


# ---- objects and rooms -----------------------------------------------------------------

_OBJECT_COLS = "object_type, object_id, tenant_id, room_id, alias, title, fields, participants, state"


def get_object(cur: Cursor, tenant_id: str, object_type: str, object_id: str) -> Object | None:
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects "
                "WHERE tenant_id = %s AND object_type = %s AND object_id = %s",
                (tenant_id, object_type, object_id))
    row = cur.fetchone()
    return Object(*row) if row else None


def list_objects(cur: Cursor, tenant_id: str, object_type: str | None,
                 after: tuple[str, str] | None, limit: int) -> list[Object]:
    a_type, a_id = after or (None, None)
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects WHERE tenant_id = %s "
                "AND (%s::text IS NULL OR object_type = %s) "
                "AND (%s::text IS NULL OR (object_type, object_id) > (%s, %s)) "
                "ORDER BY object_type, object_id LIMIT %s",
                (tenant_id, object_type, object_type, a_type, a_type, a_id, limit))
    return [Object(*row) for row in cur.fetchall()]


def tenant_objects(cur: Cursor, tenant_id: str) -> list[Object]:
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects WHERE tenant_id = %s "
                "ORDER BY object_type, object_id", (tenant_id,))
    return [Object(*row) for row in cur.fetchall()]


def objects_with_participant(cur: Cursor, tenant_id: str, erp_user_id: str) -> list[Object]:
    cur.execute(f"SELECT {_OBJECT_COLS} FROM erp_bridge.objects WHERE tenant_id = %s "
                "AND participants @> %s::jsonb ORDER BY object_type, object_id",
                (tenant_id, json.dumps([erp_user_id])))
    return [Object(*row) for row in cur.fetchall()]


def upsert_object(cur: Cursor, o: Object) -> None:
    ts = now_ms()
    cur.execute(
        f"INSERT INTO erp_bridge.objects ({_OBJECT_COLS}, created_ts, updated_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (tenant_id, object_type, object_id) DO UPDATE SET title = EXCLUDED.title, "
        " fields = EXCLUDED.fields, participants = EXCLUDED.participants, "
        " room_id = EXCLUDED.room_id, alias = EXCLUDED.alias, state = EXCLUDED.state, "
        " closed_ts = CASE WHEN EXCLUDED.state = 'closed' THEN coalesce(erp_bridge.objects.closed_ts, %s) END, "
        " updated_ts = EXCLUDED.updated_ts",
        (o.object_type, o.object_id, o.tenant_id, o.room_id, o.alias, o.title,
         json.dumps(o.fields), json.dumps(o.participants), o.state, ts, ts, ts))


_ROOM_COLS = "room_id, tenant_id, kind, object_type, object_id, alias, legacy_alias, indexed"


def record_room(cur: Cursor, r: Room) -> None:
    cur.execute(
        "INSERT INTO erp_bridge.rooms (room_id, tenant_id, kind, object_type, object_id, alias,"
        " created_ts) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (room_id) DO NOTHING",
        (r.room_id, r.tenant_id, r.kind, r.object_type, r.object_id, r.alias, now_ms()))


def get_room(cur: Cursor, room_id: str) -> Room | None:
    cur.execute(f"SELECT {_ROOM_COLS} FROM erp_bridge.rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return Room(*row) if row else None


def get_room_by_alias(cur: Cursor, alias: str) -> Room | None:
    cur.execute(f"SELECT {_ROOM_COLS} FROM erp_bridge.rooms WHERE alias = %s", (alias,))
    row = cur.fetchone()
    return Room(*row) if row else None


def rooms_with_legacy_alias(cur: Cursor) -> list[Room]:
    cur.execute(f"SELECT {_ROOM_COLS} FROM erp_bridge.rooms WHERE legacy_alias IS NOT NULL")
    return [Room(*row) for row in cur.fetchall()]


def clear_legacy_alias(cur: Cursor, room_id: str) -> None:
    cur.execute("UPDATE erp_bridge.rooms SET legacy_alias = NULL WHERE room_id = %s", (room_id,))


def tenant_rooms(cur: Cursor, tenant_id: str) -> list[Room]:
    cur.execute(f"SELECT {_ROOM_COLS} FROM erp_bridge.rooms WHERE tenant_id = %s ORDER BY created_ts",
                (tenant_id,))
    return [Room(*row) for row in cur.fetchall()]


def set_room_indexed(cur: Cursor, room_id: str) -> None:
    cur.execute("UPDATE erp_bridge.rooms SET indexed = TRUE WHERE room_id = %s", (room_id,))


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


# ---- membership and the event index (fed by the homeserver's transactions) -----------

def swap_membership(cur: Cursor, room_id: str, user_id: str, membership: str) -> str | None:
    """Record a user's membership; return the one recorded before (None: never seen)."""
    cur.execute("SELECT membership FROM erp_bridge.room_members WHERE room_id = %s AND user_id = %s "
                "FOR UPDATE", (room_id, user_id))
    row = cur.fetchone()
    cur.execute("INSERT INTO erp_bridge.room_members (room_id, user_id, membership) VALUES (%s, %s, %s) "
                "ON CONFLICT (room_id, user_id) DO UPDATE SET membership = EXCLUDED.membership",
                (room_id, user_id, membership))
    return row[0] if row else None


def index_event(cur: Cursor, event_id: str, room_id: str, kind: str, sender: str, ts: int,
                target: str | None = None, key: str | None = None,
                thread_root: str | None = None) -> bool:
    cur.execute("INSERT INTO erp_bridge.room_events (event_id, room_id, kind, sender, ts, target,"
                " reaction_key, thread_root) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (event_id) DO NOTHING",
                (event_id, room_id, kind, sender, ts, target, key, thread_root))
    return cur.rowcount == 1


@dataclass
class IndexedEvent:
    event_id: str
    kind: str
    sender: str
    target: str | None
    reaction_key: str | None
    redacted: bool


def mark_redacted(cur: Cursor, room_id: str, event_id: str) -> IndexedEvent | None:
    """Mark an event redacted; return what it was (None if the bridge never saw it)."""
    cur.execute("SELECT event_id, kind, sender, target, reaction_key, redacted FROM erp_bridge.room_events "
                "WHERE event_id = %s AND room_id = %s FOR UPDATE", (event_id, room_id))
    row = cur.fetchone()
    if row is None:
        cur.execute("INSERT INTO erp_bridge.room_events (event_id, room_id, kind, sender, ts, redacted) "
                    "VALUES (%s, %s, 'unknown', '', 0, TRUE) ON CONFLICT (event_id) DO NOTHING",
                    (event_id, room_id))
        return None
    cur.execute("UPDATE erp_bridge.room_events SET redacted = TRUE WHERE event_id = %s", (event_id,))
    return IndexedEvent(*row)


def room_stats(cur: Cursor, room_id: str) -> dict:
    cur.execute("SELECT count(*) FILTER (WHERE kind = 'message' AND NOT redacted), "
                "max(ts) FILTER (WHERE kind IN ('message', 'reaction') AND NOT redacted) "
                "FROM erp_bridge.room_events WHERE room_id = %s", (room_id,))
    count, last = cur.fetchone()
    return {"message_count": count or 0, "last_activity_ts": last}


# ---- messages posted by the ERP --------------------------------------------------------

@dataclass
class ErpMessage:
    room_id: str
    sender_user_id: str
    request_hash: str
    hs_txn_id: str
    event_id: str | None
    content_uri: str | None = None


ObjectKey = tuple[str, str, str]  # (tenant_id, object_type, object_id)


def get_erp_message(cur: Cursor, key: ObjectKey, txn_id: str) -> ErpMessage | None:
    cur.execute("SELECT room_id, sender_user_id, request_hash, hs_txn_id, event_id, content_uri "
                "FROM erp_bridge.erp_messages "
                "WHERE tenant_id = %s AND object_type = %s AND object_id = %s AND txn_id = %s",
                (*key, txn_id))
    row = cur.fetchone()
    return ErpMessage(*row) if row else None


def claim_erp_message(cur: Cursor, key: ObjectKey, txn_id: str, msg: ErpMessage) -> ErpMessage:
    """Insert the message row unless one exists; return the row now stored."""
    cur.execute(
        "INSERT INTO erp_bridge.erp_messages (tenant_id, object_type, object_id, txn_id, room_id,"
        " sender_user_id, request_hash, hs_txn_id, event_id, created_ts) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, NULL, %s) ON CONFLICT DO NOTHING",
        (*key, txn_id, msg.room_id, msg.sender_user_id, msg.request_hash, msg.hs_txn_id, now_ms()))
    stored = get_erp_message(cur, key, txn_id)
    assert stored is not None
    return stored


def set_erp_message_event(cur: Cursor, key: ObjectKey, txn_id: str, event_id: str) -> None:
    cur.execute("UPDATE erp_bridge.erp_messages SET event_id = %s "
                "WHERE tenant_id = %s AND object_type = %s AND object_id = %s AND txn_id = %s",
                (event_id, *key, txn_id))


def set_erp_message_upload(cur: Cursor, key: ObjectKey, txn_id: str, content_uri: str) -> None:
    cur.execute("UPDATE erp_bridge.erp_messages SET content_uri = %s "
                "WHERE tenant_id = %s AND object_type = %s AND object_id = %s AND txn_id = %s",
                (content_uri, *key, txn_id))


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
