-- Guest accounts, OpenID tokens for widgets, application-service transaction ids and
-- application-service room directories.

-- Guests register without credentials (POST /register?kind=guest) and may use only a
-- subset of the API until they upgrade to a full account (which clears the flag).
ALTER TABLE users ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;

-- OpenID tokens (POST /user/{userId}/openid/request_token): random, stored as SHA-256
-- hashes, valid until expires_ts.
CREATE TABLE openid_tokens (
    token_hash      BYTEA PRIMARY KEY,
    user_id         TEXT NOT NULL,
    expires_ts      BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);

-- Transaction ids of each application service: one increasing counter shared by event
-- and ephemeral transactions, so an id is never used twice, across restarts too.
ALTER TABLE appservice_state ADD COLUMN last_txn_id BIGINT NOT NULL DEFAULT 0;

-- Rooms an application service published in its own networks' directories
-- (PUT /directory/list/appservice/{networkId}/{roomId}).
CREATE TABLE appservice_room_list (
    as_id           TEXT NOT NULL,
    network_id      TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);
