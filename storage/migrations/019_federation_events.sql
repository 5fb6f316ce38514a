-- Federation, part 2: remote events, their state, and the outbound queues.

-- Outliers: events held for their part in the DAG (auth chains, the state of a room
-- joined over federation, soft-failed events) that are not in the room's timeline.
-- They and backfilled events take stream orderings from the negative sequence below, so
-- no stream reader (sync, appservices, /events) ever sees them as new; pagination by
-- depth shows backfilled events and leaves outliers out.
ALTER TABLE events ADD COLUMN outlier BOOLEAN NOT NULL DEFAULT FALSE;
CREATE SEQUENCE event_historic_stream INCREMENT BY -1 MAXVALUE -1 START WITH -1;

-- Events that failed the checks (auth rules against their auth events or the state
-- before them). Kept so they are not fetched again and so events citing them are
-- rejected too; never served. state_group: the state before (= after) the event.
CREATE TABLE rejected_events (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    json            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    state_group     BIGINT NOT NULL DEFAULT 0,
    received_ts     BIGINT NOT NULL
);

-- The state group of a room's current state when state resolution across several
-- forward extremities produced it (no single event's state group is the current state).
-- Valid while no later event (by stream ordering) has become an extremity.
CREATE TABLE room_state_heads (
    room_id         TEXT PRIMARY KEY,
    state_group     BIGINT NOT NULL,
    chain_length    INT NOT NULL,
    stream_ordering BIGINT NOT NULL
);

-- Transactions received (origin, txn id) and the answer given, so a retry is answered
-- the same without processing anything twice.
CREATE TABLE federation_inbound_txns (
    origin          TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    response_json   TEXT NOT NULL,
    received_ts     BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);

-- One outbound queue per destination: PDUs (by event id) and EDUs (their JSON), sent in
-- id order, deleted when the destination acknowledged the transaction holding them.
CREATE TABLE federation_outbox (
    id              BIGSERIAL PRIMARY KEY,
    destination     TEXT NOT NULL,
    event_id        TEXT,
    edu_json        TEXT,
    created_ts      BIGINT NOT NULL
);
CREATE INDEX federation_outbox_destination ON federation_outbox (destination, id);

-- Retry state of each destination that failed: back off, doubling, until it answers.
CREATE TABLE federation_destinations (
    destination     TEXT PRIMARY KEY,
    retry_interval_ms BIGINT NOT NULL,
    retry_at_ts     BIGINT NOT NULL,
    failing_since_ts BIGINT NOT NULL
);

-- How far the local event stream has been queued to destinations (one row), so events
-- committed just before a crash are queued at the next start.
CREATE TABLE federation_stream_position (
    lock            CHAR(1) PRIMARY KEY DEFAULT 'X' CHECK (lock = 'X'),
    stream_ordering BIGINT NOT NULL
);
INSERT INTO federation_stream_position (stream_ordering)
    SELECT COALESCE(max(stream_ordering), 0) FROM events;

-- What an invite from another server showed of its room (invite_room_state), for the
-- invitee's /sync while this server knows the room only through the invite.
CREATE TABLE remote_invite_state (
    room_id         TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    state_json      TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);

-- Rooms created on other servers. Their create event's tenant key is the other
-- server's business: on this side such a room belongs to the tenant of the local user
-- who joined it first (NULL: no tenant).
CREATE TABLE remote_rooms (
    room_id         TEXT PRIMARY KEY,
    tenant_id       TEXT
);
