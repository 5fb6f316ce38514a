-- Receipts, to-device messages, device-list changes, presence, end-to-end keys, backups.

CREATE TABLE receipts (
    room_id         TEXT NOT NULL,
    receipt_type    TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL DEFAULT '',  -- '' for unthreaded receipts
    event_id        TEXT NOT NULL,
    ts              BIGINT NOT NULL,
    stream_id       BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_stream ON receipts (room_id, stream_id);
CREATE SEQUENCE receipts_stream;

CREATE TABLE to_device_messages (
    stream_id       BIGINT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    message_json    TEXT NOT NULL
);
CREATE INDEX to_device_target ON to_device_messages (user_id, device_id, stream_id);
CREATE SEQUENCE to_device_stream;
-- Transaction ids of sendToDevice, so a retry delivers nothing twice.
CREATE TABLE to_device_txns (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    txn_id          TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE device_list_changes (
    stream_id       BIGINT NOT NULL,
    user_id         TEXT NOT NULL,
    PRIMARY KEY (stream_id, user_id)
);
CREATE INDEX device_list_changes_user ON device_list_changes (user_id, stream_id);
CREATE SEQUENCE device_list_stream;

CREATE TABLE presence (
    user_id         TEXT PRIMARY KEY,
    state           TEXT NOT NULL,
    status_msg      TEXT,
    last_active_ts  BIGINT NOT NULL
);

CREATE TABLE e2e_device_keys (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    key_json        TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE e2e_one_time_keys (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    key_json        TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE TABLE e2e_fallback_keys (
    user_id         TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    algorithm       TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    key_json        TEXT NOT NULL,
    used            BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);
CREATE TABLE e2e_cross_signing_keys (
    user_id         TEXT NOT NULL,
    key_type        TEXT NOT NULL,   -- master, self_signing, user_signing
    key_json        TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
-- Signatures uploaded through keys/signatures/upload, merged into query answers.
CREATE TABLE e2e_signatures (
    signer_user_id  TEXT NOT NULL,
    signer_key_id   TEXT NOT NULL,
    target_user_id  TEXT NOT NULL,
    target_key_id   TEXT NOT NULL,   -- a device id or a cross-signing public key
    signature       TEXT NOT NULL,
    PRIMARY KEY (signer_user_id, signer_key_id, target_user_id, target_key_id)
);

CREATE TABLE room_key_backup_versions (
    user_id         TEXT NOT NULL,
    version         BIGINT NOT NULL,
    algorithm       TEXT NOT NULL,
    auth_data       TEXT NOT NULL,
    etag            BIGINT NOT NULL DEFAULT 0,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE room_key_backup_keys (
    user_id         TEXT NOT NULL,
    version         BIGINT NOT NULL,
    room_id         TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    key_json        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Push rules the user changed (enabled flag, actions, or their own rules).
CREATE TABLE push_rules (
    user_id         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    rule_id         TEXT NOT NULL,
    rule_json       TEXT,            -- NULL for a server-default rule only re-flagged
    enabled         BOOLEAN,
    priority        BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, kind, rule_id)
);
