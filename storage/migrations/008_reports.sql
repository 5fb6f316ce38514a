-- Reports of events, rooms and users (POST .../report), kept for moderators.
CREATE TABLE content_reports (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    received_ts     BIGINT NOT NULL,
    reporter        TEXT NOT NULL,
    room_id         TEXT,               -- event and room reports
    event_id        TEXT,               -- event reports
    target_user_id  TEXT,               -- user reports; for event reports the event's sender
    reason          TEXT,
    score           INT                 -- event reports from clients that still send one
);
CREATE INDEX content_reports_room ON content_reports (room_id, id) WHERE room_id IS NOT NULL;
