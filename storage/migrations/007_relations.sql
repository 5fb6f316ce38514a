-- Event relationships (m.relates_to with a rel_type), recorded when the child event is
-- persisted, only when its parent is an event of the same room. A redacted child's row
-- is deleted in the redaction's transaction, so every row here is a live relation.
CREATE TABLE event_relations (
    event_id        TEXT PRIMARY KEY,      -- the child
    room_id         TEXT NOT NULL,
    relates_to_id   TEXT NOT NULL,         -- the parent
    rel_type        TEXT NOT NULL,
    event_type      TEXT NOT NULL,         -- the child's type
    sender          TEXT NOT NULL,         -- the child's sender
    aggregation_key TEXT,                  -- m.annotation key
    depth           BIGINT NOT NULL,       -- the child's topological position
    stream_ordering BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL
);
-- Children of a parent in topological order (/relations, thread counts).
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, depth, stream_ordering);
-- Duplicate annotations and thread participation.
CREATE INDEX event_relations_parent_sender ON event_relations (relates_to_id, rel_type, sender);

-- One row per thread root with its latest (topologically) m.thread child, for /threads.
CREATE TABLE threads (
    root_id         TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    latest_event_id TEXT NOT NULL,
    latest_depth    BIGINT NOT NULL,
    latest_stream   BIGINT NOT NULL
);
CREATE INDEX threads_room_latest ON threads (room_id, latest_depth, latest_stream);
