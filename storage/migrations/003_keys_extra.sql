-- One-time keys are claimed in the order they were uploaded: number each stored key.
CREATE SEQUENCE e2e_one_time_keys_seq;
ALTER TABLE e2e_one_time_keys
    ADD COLUMN seq BIGINT NOT NULL DEFAULT nextval('e2e_one_time_keys_seq');
ALTER SEQUENCE e2e_one_time_keys_seq OWNED BY e2e_one_time_keys.seq;
CREATE INDEX e2e_one_time_keys_order ON e2e_one_time_keys (user_id, device_id, algorithm, seq);

-- keys/query reads the signatures made on a user's keys by target.
CREATE INDEX e2e_signatures_target ON e2e_signatures (target_user_id, target_key_id);
