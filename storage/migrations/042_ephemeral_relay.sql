-- Several processes (docs/scaling.md): typing, read receipts and presence that the stream
-- owner hands to the process running the application-service job, when that is another
-- process (homeserver/ephemeral_relay.py). Rows are kept for minutes: ephemeral data may
-- be dropped, events never.
CREATE TABLE IF NOT EXISTS ephemeral_relay (
    id BIGSERIAL PRIMARY KEY,
    event TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
