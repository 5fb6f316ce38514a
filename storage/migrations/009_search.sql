-- Server-side search: a PostgreSQL full-text index of message bodies, room names and topics.

-- One row per searchable event. `text` is the event's current text (an edited message's
-- latest replacement body); `vector` is built from it (case- and accent-folded) with the
-- text search configuration named in search_settings, in the transaction that persists
-- the event. Redacted events are deleted from here.
CREATE TABLE event_search (
    event_id        TEXT PRIMARY KEY,
    room_id         TEXT NOT NULL,
    sender          TEXT NOT NULL,
    key             TEXT NOT NULL,          -- content.body, content.name or content.topic
    stream_ordering BIGINT NOT NULL,
    has_url         BOOLEAN NOT NULL,       -- content has `url` (filter contains_url)
    replaces        TEXT,                   -- an invalid m.replace kept as a message: never editable
    text            TEXT NOT NULL,
    vector          TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);

-- Valid edits (m.replace) of indexed messages; the latest (origin_server_ts, edit_id)
-- supplies the original's text, and redacting it falls back to the one before.
CREATE TABLE event_search_edits (
    edit_id         TEXT PRIMARY KEY,
    original_id     TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    text            TEXT NOT NULL
);
CREATE INDEX event_search_edits_original ON event_search_edits (original_id);

-- The text search configuration the vectors are built with (config search.language).
-- NULL: not built yet. Start-up (re)builds the index from the events table whenever this
-- differs from the configuration, so events persisted before this migration are indexed.
CREATE TABLE search_settings (
    language        TEXT
);
INSERT INTO search_settings (language) VALUES (NULL);

-- A room's history of one kind of state (history visibility, for the search's visibility
-- windows) without walking all of its messages.
CREATE INDEX events_room_state_type ON events (room_id, type, stream_ordering)
    WHERE state_key IS NOT NULL;
