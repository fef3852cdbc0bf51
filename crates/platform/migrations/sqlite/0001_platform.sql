-- The durable event log, per-store sequences, consumer offsets and idempotency keys.
CREATE TABLE event_log (
    position       INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    store_id       TEXT    NOT NULL,
    store_seq      INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    body           BLOB    NOT NULL,
    UNIQUE (topic, store_id, store_seq)
);
CREATE INDEX event_log_topic_position ON event_log (topic, position);

CREATE TABLE store_sequences (
    topic    TEXT    NOT NULL,
    store_id TEXT    NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (topic, store_id)
) WITHOUT ROWID;

CREATE TABLE consumer_offsets (
    group_name TEXT PRIMARY KEY,
    position   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    scope         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request       BLOB    NOT NULL,
    response      BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
