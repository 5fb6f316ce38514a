"""The bridge's schema migrations, applied in order at start-up (db.apply_migrations).
They live in the bridge's own schema `erp_bridge`, versioned in `erp_bridge.schema_version`,
so they never touch the homeserver's tables even when both share one database.
Never edit a released migration: add the next number."""
from __future__ import annotations

from typing import Callable, Union

from appservice.erp_bridge.ids import Ids, encode_localpart

SCHEMA = "erp_bridge"

_001_INITIAL = """
-- ERP tenants: one space and one general room each, run by the tenant's bot user.
CREATE TABLE erp_bridge.tenants (
    tenant_id        TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    bot_user_id      TEXT NOT NULL UNIQUE,
    space_id         TEXT NOT NULL,
    general_room_id  TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    updated_ts       BIGINT NOT NULL
);

-- ERP users and the Matrix users (puppets) made for them.
CREATE TABLE erp_bridge.users (
    erp_user_id   TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL REFERENCES erp_bridge.tenants (tenant_id),
    display_name  TEXT NOT NULL,
    email         TEXT,
    active        BOOLEAN NOT NULL,
    created_ts    BIGINT NOT NULL,
    updated_ts    BIGINT NOT NULL
);
CREATE INDEX users_tenant ON erp_bridge.users (tenant_id);

-- ERP business objects (an order, a ticket) and their rooms; the last PUT's content.
CREATE TABLE erp_bridge.objects (
    object_type   TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES erp_bridge.tenants (tenant_id),
    room_id       TEXT NOT NULL UNIQUE,
    alias         TEXT NOT NULL,
    title         TEXT NOT NULL,
    fields        JSONB NOT NULL,
    participants  JSONB NOT NULL,           -- array of erp_user_id
    created_ts    BIGINT NOT NULL,
    updated_ts    BIGINT NOT NULL,
    PRIMARY KEY (object_type, object_id)
);
CREATE INDEX objects_participants ON erp_bridge.objects USING gin (participants);

-- Every room the bridge made, recorded as soon as it exists (before anyone else can
-- join it), so no message in it can reach the bridge before the bridge knows the room.
CREATE TABLE erp_bridge.rooms (
    room_id      TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('space', 'general', 'object')),
    object_type  TEXT,
    object_id    TEXT,
    alias        TEXT NOT NULL,
    created_ts   BIGINT NOT NULL
);

-- Messages the ERP posted (POST .../messages), keyed by the ERP's txn_id. The row is
-- written before the message is sent, so a retry after a crash finds it.
CREATE TABLE erp_bridge.erp_messages (
    object_type     TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    sender_user_id  TEXT NOT NULL,
    request_hash    TEXT NOT NULL,           -- sha256 of (sender, body): same txn_id, other content -> 409
    hs_txn_id       TEXT NOT NULL,           -- the transaction id used on the homeserver's /send
    event_id        TEXT,                    -- null until the homeserver answered
    created_ts      BIGINT NOT NULL,
    PRIMARY KEY (object_type, object_id, txn_id)
);

-- Application-service transactions already taken in (dedupe of homeserver retries).
CREATE TABLE erp_bridge.as_transactions (
    txn_id       TEXT PRIMARY KEY,
    received_ts  BIGINT NOT NULL,
    event_count  INT NOT NULL
);
CREATE INDEX as_transactions_received ON erp_bridge.as_transactions (received_ts);

-- The webhook outbox: one row per message still to deliver, in `seq` order per room.
-- `body` is the exact JSON POSTed (and signed), fixed when queued, so every retry sends
-- the same bytes. A row is deleted once the ERP answered 2xx.
CREATE TABLE erp_bridge.outbox (
    seq              BIGINT PRIMARY KEY,
    room_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL UNIQUE,
    body             TEXT NOT NULL,
    attempts         INT NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_ts       BIGINT NOT NULL
);
CREATE SEQUENCE erp_bridge.outbox_seq;
CREATE INDEX outbox_room_seq ON erp_bridge.outbox (room_id, seq);
"""

_002_TENANT_KEYS = """
-- Objects are keyed by tenant: two tenants may both have order 4711.
ALTER TABLE erp_bridge.objects DROP CONSTRAINT objects_pkey;
ALTER TABLE erp_bridge.objects ADD PRIMARY KEY (tenant_id, object_type, object_id);
-- open/closed (a closed object's room is read-only for people).
ALTER TABLE erp_bridge.objects ADD COLUMN state TEXT NOT NULL DEFAULT 'open'
    CHECK (state IN ('open', 'closed'));
ALTER TABLE erp_bridge.objects ADD COLUMN closed_ts BIGINT;

ALTER TABLE erp_bridge.erp_messages ADD COLUMN tenant_id TEXT;
UPDATE erp_bridge.erp_messages m SET tenant_id = o.tenant_id FROM erp_bridge.objects o
 WHERE o.object_type = m.object_type AND o.object_id = m.object_id;
UPDATE erp_bridge.erp_messages m SET tenant_id = r.tenant_id FROM erp_bridge.rooms r
 WHERE m.tenant_id IS NULL AND r.room_id = m.room_id;
DELETE FROM erp_bridge.erp_messages WHERE tenant_id IS NULL;
ALTER TABLE erp_bridge.erp_messages ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE erp_bridge.erp_messages DROP CONSTRAINT erp_messages_pkey;
ALTER TABLE erp_bridge.erp_messages ADD PRIMARY KEY (tenant_id, object_type, object_id, txn_id);
-- Attachments: the uploaded file's mxc URI, kept so a retry does not upload again.
ALTER TABLE erp_bridge.erp_messages ADD COLUMN content_uri TEXT;

-- The alias of schema 1 (no tenant in it), until the homeserver has the new one.
ALTER TABLE erp_bridge.rooms ADD COLUMN legacy_alias TEXT;
-- Rooms made before the event index existed: their index is filled from history once.
ALTER TABLE erp_bridge.rooms ADD COLUMN indexed BOOLEAN NOT NULL DEFAULT TRUE;
UPDATE erp_bridge.rooms SET indexed = FALSE;

ALTER TABLE erp_bridge.tenants ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'removed'));
ALTER TABLE erp_bridge.users ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'inactive', 'deleting', 'deleted'));
UPDATE erp_bridge.users SET state = 'inactive' WHERE NOT active;
ALTER TABLE erp_bridge.users ADD COLUMN erase BOOLEAN NOT NULL DEFAULT FALSE;

-- Membership as the bridge last saw it in the homeserver's transactions, to tell a join
-- from a profile change and a leave from a rejected invite.
CREATE TABLE erp_bridge.room_members (
    room_id     TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    membership  TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- The events of bridged rooms the summaries count: messages (not edits), reactions.
-- A redaction marks its target (a row is written even for a target not seen yet, so a
-- late backfill cannot bring it back).
CREATE TABLE erp_bridge.room_events (
    event_id     TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('message', 'reaction', 'unknown')),
    sender       TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    target       TEXT,          -- a reaction's event
    reaction_key TEXT,
    thread_root  TEXT,
    redacted     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX room_events_room ON erp_bridge.room_events (room_id, kind, ts);
"""


def _002_new_aliases(cur) -> None:
    """Give every object the tenant-carrying alias; the old one is kept in
    rooms.legacy_alias until the bridge has moved it on the homeserver."""
    cur.execute("SELECT tenant_id, object_type, object_id, room_id, alias FROM erp_bridge.objects")
    for tenant_id, object_type, object_id, room_id, alias in cur.fetchall():
        localpart, _, server = alias[1:].partition(":")
        suffix = f"{object_type}_{encode_localpart(object_id)}"
        if not localpart.endswith(suffix):
            continue
        ids = Ids(localpart[: -len(suffix)], server)
        new_alias = ids.alias(ids.object_alias_localpart(tenant_id, object_type, object_id))
        cur.execute("UPDATE erp_bridge.objects SET alias = %s WHERE room_id = %s", (new_alias, room_id))
        cur.execute("UPDATE erp_bridge.rooms SET alias = %s, legacy_alias = %s WHERE room_id = %s",
                    (new_alias, alias, room_id))


Step = Union[str, Callable]

# (number, name, steps: SQL text or a function of the cursor), in order.
MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (1, "initial", [_001_INITIAL]),
    (2, "tenant_keys", [_002_TENANT_KEYS, _002_new_aliases]),
]
