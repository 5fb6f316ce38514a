-- The media repository: metadata of local media (the bytes live in files under
-- <data_dir>/media, named by their SHA-256), cached thumbnails and URL previews.

CREATE TABLE local_media (
    media_id            TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,        -- the uploader (for /create: who created the id)
    tenant_id           TEXT,                 -- the uploader's tenant when the id was made
    content_type        TEXT,                 -- NULL until the content arrives
    upload_name         TEXT,
    size                BIGINT,
    sha256              TEXT,                 -- hex; names the file
    created_ts          BIGINT NOT NULL,
    uploaded_ts         BIGINT,               -- NULL: created with /create, not uploaded yet
    unused_expires_ts   BIGINT,               -- for ids from /create: the upload deadline
    quarantined         BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX local_media_pending ON local_media (user_id) WHERE uploaded_ts IS NULL;
CREATE INDEX local_media_sha256 ON local_media (sha256);

-- Thumbnails are derived from the content, so they are keyed by its hash and shared by
-- every media id holding the same bytes. `is_original`: the original file is served as
-- the thumbnail (a small animated image asked for with animated=true).
CREATE TABLE media_thumbnails (
    sha256              TEXT NOT NULL,
    width               INT NOT NULL,         -- the configured size chosen
    height              INT NOT NULL,
    method              TEXT NOT NULL,
    animated            BOOLEAN NOT NULL,
    content_type        TEXT NOT NULL,
    size                BIGINT NOT NULL,
    is_original         BOOLEAN NOT NULL,
    created_ts          BIGINT NOT NULL,
    PRIMARY KEY (sha256, width, height, method, animated)
);

-- URL previews, cached per tenant ('' for users without one): a preview's image is media
-- of the asker's tenant.
CREATE TABLE url_previews (
    url                 TEXT NOT NULL,
    tenant_key          TEXT NOT NULL,
    fetched_ts          BIGINT NOT NULL,
    og                  TEXT NOT NULL,        -- the JSON answer
    PRIMARY KEY (url, tenant_key)
);
