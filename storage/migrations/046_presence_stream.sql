-- Several processes (docs/scaling.md): presence kept by a process other than the stream
-- owner (`worker.jobs.presence`) writes each change here, announcing the stream
-- `presence`; the stream owner, which serves /sync, reads the rows after its position.
-- The ids are the presence positions of sync tokens.
CREATE TABLE IF NOT EXISTS presence_stream (
    stream_id BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    -- fresher activity alone, no change of state: mirrors wake nobody for it
    activity_only BOOLEAN NOT NULL DEFAULT false,
    written_ts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_stream_user ON presence_stream (user_id, stream_id);
