-- Federation, part 1: other servers' signing keys.

-- Each verify key of another server as its own signed key response proved it (fetched
-- from the server or through a notary). key_json is that whole response, kept so this
-- server can answer notary queries (/_matrix/key/v2/query) with the origin's signature.
CREATE TABLE server_keys (
    server_name     TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    verify_key      TEXT NOT NULL,           -- unpadded base64 ed25519 public key
    valid_until_ts  BIGINT NOT NULL,
    expired_ts      BIGINT,                  -- set for old_verify_keys
    fetched_ts      BIGINT NOT NULL,
    key_json        TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
