-- Several processes (docs/scaling.md): which writers share the rooms, by generation. A
-- new generation moves rooms between writers while they run: each writer of the
-- previous generation records its release once it has written everything it built for
-- the rooms it gives up, and a writer builds a room it gains only after the room's
-- previous writer has released it.
CREATE TABLE IF NOT EXISTS writer_layouts (
    generation BIGINT PRIMARY KEY,
    writers TEXT[] NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS writer_layout_releases (
    generation BIGINT NOT NULL,
    instance TEXT NOT NULL,
    released_ts BIGINT NOT NULL,
    PRIMARY KEY (generation, instance)
);
-- A writer's batches look for a release recorded for it (storage/writer_layout.py).
CREATE INDEX IF NOT EXISTS writer_layout_releases_instance ON writer_layout_releases (instance, generation);
-- Each process's internal URL, written at start-up, so a writer added later is reached
-- by processes whose config does not name it yet.
CREATE TABLE IF NOT EXISTS worker_instances (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    internal_url TEXT NOT NULL,
    state_group_slot INT,
    started_ts BIGINT NOT NULL
);
-- Two writers must never take state group ids from the same residue class.
CREATE UNIQUE INDEX IF NOT EXISTS worker_instances_slot ON worker_instances (state_group_slot)
    WHERE state_group_slot IS NOT NULL;
