-- Idempotency keys of every mutating RPC, shared by the services of one database.
CREATE TABLE IF NOT EXISTS platform.idempotency_keys (
    scope      TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    request    BYTEA       NOT NULL,
    response   BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Consumer offsets per (group, topic, store): each store's events are gapless and ordered by
-- store_seq, so a consumer resumes exactly after the last sequence it stored.
CREATE TABLE IF NOT EXISTS platform.consumer_offsets (
    group_name TEXT   NOT NULL,
    topic      TEXT   NOT NULL,
    store_id   TEXT   NOT NULL,
    last_seq   BIGINT NOT NULL,
    PRIMARY KEY (group_name, topic, store_id)
);
