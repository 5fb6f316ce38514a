-- Push notifications: the actions push rules gave each local member for each event,
-- pushers and their delivery positions; per-user rate-limit overrides.

-- One row per (member, event) whose rules said "notify", written in the same
-- transaction as the event, so the counts of a 200'd event are never lost. Unread
-- counts are these rows after the member's read receipts; GET /notifications lists them.
-- thread_id: 'main' for the main timeline, else the thread root's event id.
CREATE TABLE event_push_actions (
    user_id         TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    highlight       BOOLEAN NOT NULL,
    actions         TEXT NOT NULL,      -- JSON array
    PRIMARY KEY (user_id, stream_ordering)
);

-- POST /pushers/set. (app_id, pushkey) is unique per user; last_stream is the stream
-- position up to which this pusher has handled the user's notifications.
CREATE TABLE pushers (
    id                  BIGSERIAL PRIMARY KEY,
    user_id             TEXT NOT NULL,
    access_token_hash   BYTEA,           -- the token that created it; NULL for app services
    kind                TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT,
    lang                TEXT NOT NULL,
    data_json           TEXT NOT NULL,
    pushkey_ts          BIGINT NOT NULL,
    last_stream         BIGINT NOT NULL,
    UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_pushkey ON pushers (app_id, pushkey);

-- PUT /_homeserver/admin/v1/users/{userId}/ratelimit: a user's own message rate
-- (0 and 0: not limited at all).
CREATE TABLE ratelimit_override (
    user_id             TEXT PRIMARY KEY,
    messages_per_second DOUBLE PRECISION NOT NULL,
    burst_count         DOUBLE PRECISION NOT NULL
);
