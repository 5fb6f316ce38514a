-- User-interactive authentication sessions. Each is bound to the operation that started
-- it (method, path and what the handler names) and to the requesting user (NULL for
-- registration); it remembers the stages completed, the request's parameters (never
-- passwords) and server-side results such as a password hash or the registered user.
CREATE TABLE uia_sessions (
    session_id  TEXT PRIMARY KEY,
    operation   TEXT NOT NULL,
    user_id     TEXT,
    params      TEXT NOT NULL,
    completed   TEXT[] NOT NULL DEFAULT '{}',
    data        TEXT NOT NULL DEFAULT '{}',
    created_ts  BIGINT NOT NULL
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_ts);
