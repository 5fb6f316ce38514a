-- Several sync processes (docs/scaling.md): the processes serving /sync besides the
-- stream owner read each per-user stream's rows after their position when the owner
-- announces one, so each stream can be read by stream id.
CREATE INDEX IF NOT EXISTS receipts_stream ON receipts (stream_id);
CREATE INDEX IF NOT EXISTS account_data_stream ON account_data (stream_id);
-- Typing lives in the stream owner's memory; with several sync processes it also writes
-- each room's typing users here, by typing stream id (the positions of sync tokens).
CREATE TABLE IF NOT EXISTS typing_stream (
    stream_id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    user_ids TEXT[] NOT NULL,
    written_ts BIGINT NOT NULL
);
