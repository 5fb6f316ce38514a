-- Application services, tenants and one-time login tokens.

-- How far each application service's transaction stream has been delivered.
CREATE TABLE appservice_state (
    as_id           TEXT PRIMARY KEY,
    last_stream     BIGINT NOT NULL,    -- every event up to here is delivered (or not of interest)
    pending_txn     TEXT,               -- the transaction being retried, if any
    pending_upto    BIGINT,              -- its last stream position
    pending_events  TEXT                 -- its event ids (JSON), so a retry sends the same events
);

ALTER TABLE users ADD COLUMN appservice_id TEXT;   -- the service that registered the user
ALTER TABLE users ADD COLUMN tenant_id TEXT;
CREATE INDEX users_tenant ON users (tenant_id);

-- A room's tenant, copied from its create event (content "io.erpchat.tenant"), fixed for life.
ALTER TABLE rooms ADD COLUMN tenant_id TEXT;

CREATE TABLE login_tokens (
    token_hash      BYTEA PRIMARY KEY,
    user_id         TEXT NOT NULL,
    expires_ts      BIGINT NOT NULL
);
