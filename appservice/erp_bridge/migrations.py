"""The bridge's schema migrations, applied in order at start-up (db.apply_migrations).
They live in the bridge's own schema `erp_bridge`, versioned in `erp_bridge.schema_version`,
so they never touch the homeserver's tables even when both share one database.
Never edit a released migration: add the next number."""
from __future__ import annotations

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

# (number, name, sql), in order.
MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "initial", _001_INITIAL),
]
