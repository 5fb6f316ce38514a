-- Several processes (docs/scaling.md): device-list changes made away from the stream owner
-- (the admin API answers on client processes), kept here until the owner, which alone
-- allocates the device-list stream, has recorded them.
CREATE TABLE IF NOT EXISTS device_list_outbox (
    id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL
);
