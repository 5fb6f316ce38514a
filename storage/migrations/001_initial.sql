-- Initial schema. Each migration runs in one transaction; the runner records its number.

CREATE TABLE users (
    user_id         TEXT PRIMARY KEY,
    password_hash   TEXT,
    is_admin        BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated     BOOLEAN NOT NULL DEFAULT FALSE,
    displayname     TEXT,
    avatar_url      TEXT,
    created_ts      BIGINT NOT NULL
);
-- Prefix search for the user directory on both halves of a name.
CREATE INDEX users_lower_id ON users (lower(user_id) text_pattern_ops);
CREATE INDEX users_lower_displayname ON users (lower(displayname) text_pattern_ops);

CREATE TABLE devices (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    display_name    TEXT,
    last_seen_ts    BIGINT,
    last_seen_ip    TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Access tokens are stored as SHA-256 hashes; the token itself is never kept.
CREATE TABLE access_tokens (
    token_hash      BYTEA PRIMARY KEY,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    created_ts      BIGINT NOT NULL
);
CREATE INDEX access_tokens_user ON access_tokens (user_id, device_id);

CREATE TABLE rooms (
    room_id         TEXT PRIMARY KEY,
    room_version    TEXT NOT NULL,
    creator         TEXT NOT NULL,
    is_public       BOOLEAN NOT NULL DEFAULT FALSE,  -- published in the room directory
    created_ts      BIGINT NOT NULL
);

-- Every room event, in its signed wire form, with the columns the queries need.
-- stream_ordering is the single global order of persistence (one writer assigns it).
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    event_id        TEXT NOT NULL UNIQUE,
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT,
    sender          TEXT NOT NULL,
    depth           BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts     BIGINT NOT NULL,
    state_group     BIGINT NOT NULL,       -- state after this event
    redacts         TEXT,
    redacted_by     TEXT,                  -- set when a redaction of this event is accepted
    unsigned_json   TEXT,                  -- prev_content / replaces_state, computed at persist
    txn_device      TEXT,                  -- "user_id|device_id" that sent it, for transaction_id
    txn_id          TEXT,
    json            TEXT NOT NULL
);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_redacts ON events (redacts) WHERE redacts IS NOT NULL;

CREATE TABLE event_edges (
    event_id        TEXT NOT NULL,
    prev_event_id   TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id        TEXT NOT NULL,
    auth_id         TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_id)
);

CREATE TABLE forward_extremities (
    room_id         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State snapshots: a group stores only its delta against prev_group; every
-- `max_delta_chain` groups a full snapshot (prev_group NULL) bounds the walk.
CREATE TABLE state_groups (
    id              BIGINT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    prev_group      BIGINT,
    chain_length    INT NOT NULL
);
CREATE TABLE state_group_entries (
    state_group     BIGINT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    PRIMARY KEY (state_group, type, state_key)
);

CREATE TABLE current_state (
    room_id         TEXT NOT NULL,
    type            TEXT NOT NULL,
    state_key       TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    membership      TEXT,                  -- for m.room.member rows
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_member_of ON current_state (state_key, membership)
    WHERE type = 'm.room.member';

-- One row per membership event: history of who was in which room when.
CREATE TABLE room_memberships (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    sender          TEXT NOT NULL,
    membership      TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    displayname     TEXT,
    avatar_url      TEXT
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, room_id, stream_ordering);

CREATE TABLE forgotten_rooms (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE room_aliases (
    room_alias      TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    creator         TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

CREATE TABLE account_data (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL DEFAULT '',   -- '' for global account data
    type            TEXT NOT NULL,
    content         TEXT NOT NULL,
    stream_id       BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE SEQUENCE account_data_stream;

CREATE TABLE user_filters (
    user_id         TEXT NOT NULL,
    filter_id       BIGINT NOT NULL,
    filter_json     TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Client transaction ids: a retry of PUT /send with the same id returns the same event.
CREATE TABLE event_txn_ids (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    created_ts      BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
