-- Operations: the Synapse-compatible admin API, tenant admins, the audit log, admin tasks
-- (purges, room deletions) and where each device was last seen.

-- GDPR erasure (POST /_synapse/admin/v1/deactivate/{userId} {"erase": true}).
ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
-- A tenant admin manages the users and rooms of this tenant through the admin API;
-- NULL for everyone else. Set by a server admin (PUT /_homeserver/admin/v1/users/{id}/admin_tenant).
ALTER TABLE users ADD COLUMN admin_tenant TEXT;

ALTER TABLE devices ADD COLUMN last_seen_user_agent TEXT;

-- Tokens made by POST /_synapse/admin/v1/users/{userId}/login: the admin who asked, and an
-- optional expiry. They belong to no device of the user.
ALTER TABLE access_tokens ADD COLUMN puppeted_by TEXT;
ALTER TABLE access_tokens ADD COLUMN valid_until_ms BIGINT;
CREATE INDEX access_tokens_puppeted_by ON access_tokens (puppeted_by) WHERE puppeted_by IS NOT NULL;

-- Rooms nobody may join or be invited to (PUT /_synapse/admin/v1/rooms/{roomId}/block).
CREATE TABLE blocked_rooms (
    room_id         TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,      -- the admin who blocked it
    tenant_id       TEXT,               -- the room's tenant when blocked (for tenant admins)
    ts              BIGINT NOT NULL
);

-- Who did what, when, from where.
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    ts              BIGINT NOT NULL,
    actor           TEXT,               -- NULL: anonymous (a failed login, shared-secret registration)
    action          TEXT NOT NULL,
    target_user     TEXT,
    target_room     TEXT,
    tenant_id       TEXT,               -- the tenant of what was acted on, for tenant admins
    ip              TEXT,
    user_agent      TEXT,
    details         TEXT                -- JSON; never a password or a token
);
CREATE INDEX audit_log_ts ON audit_log (ts);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, id);

-- Long admin operations (purge history, delete room) and their outcome.
CREATE TABLE admin_tasks (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('purge_history', 'delete_room')),
    room_id         TEXT NOT NULL,
    tenant_id       TEXT,
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'active', 'complete', 'failed')),
    error           TEXT,
    result          TEXT,               -- JSON (delete_room: the shutdown_room object)
    created_ts      BIGINT NOT NULL,
    updated_ts      BIGINT NOT NULL
);
CREATE INDEX admin_tasks_room ON admin_tasks (room_id, created_ts);
