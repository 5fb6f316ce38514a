-- Several writer processes (docs/scaling.md): event stream orderings come from one
-- sequence, and each writer records the position up to which all of its events are
-- persisted, for readers catching up after a reconnect or a start.
CREATE SEQUENCE IF NOT EXISTS events_stream_seq;
SELECT setval('events_stream_seq', GREATEST(m, 1), m > 0)
  FROM (SELECT COALESCE(max(stream_ordering), 0) AS m FROM events) AS top;

CREATE TABLE IF NOT EXISTS stream_positions (
    stream TEXT NOT NULL,
    instance TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (stream, instance)
);
