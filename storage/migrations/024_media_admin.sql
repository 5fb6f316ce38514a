-- The media admin API: who quarantined a piece of media (replaces the flag nothing set),
-- media protected from quarantine, and when media was last downloaded (written in
-- batches), which deleting media by date goes by.

ALTER TABLE local_media DROP COLUMN quarantined;
ALTER TABLE local_media ADD COLUMN quarantined_by TEXT;          -- NULL: not quarantined
ALTER TABLE local_media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE local_media ADD COLUMN last_access_ts BIGINT;        -- NULL: never downloaded
-- A user's media, newest first (the admin API's default order).
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
