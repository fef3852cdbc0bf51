-- A row inserted inside a B-tree ordered by store lands in that store's pages: with one terminal
-- in each of many stores, every sale of a group commit dirtied (and often rebalanced) other pages,
-- and the commit wrote each of them to the log. Keys ordered by time append at the tree's right
-- edge instead, which all the sales of a commit share.

-- A key's (key, scope) is as unique as its (scope, key); keys made from the time (UUIDv7, as the
-- clients and the benchmark make them) now append.
CREATE TABLE idempotency_keys_by_key (
    scope         TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    request       BLOB    NOT NULL,
    response      BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (key, scope)
) WITHOUT ROWID;
INSERT INTO idempotency_keys_by_key (scope, key, request, response, created_at_ms)
    SELECT scope, key, request, response, created_at_ms FROM idempotency_keys;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_by_key RENAME TO idempotency_keys;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);

-- Only a store's stock events are read by store and sequence (a terminal's stream resuming); the
-- sales topic is read by log position alone. Its sequences stay unique by construction: they are
-- taken from store_sequences in the transaction that appends the event.
CREATE TABLE event_log_by_position (
    position       INTEGER PRIMARY KEY,
    topic          TEXT    NOT NULL,
    store_id       TEXT    NOT NULL,
    store_seq      INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    event_type     TEXT    NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    body           BLOB    NOT NULL
);
INSERT INTO event_log_by_position (position, topic, store_id, store_seq, event_id, event_type, occurred_at_ms, body)
    SELECT position, topic, store_id, store_seq, event_id, event_type, occurred_at_ms, body FROM event_log;
DROP TABLE event_log;
ALTER TABLE event_log_by_position RENAME TO event_log;
CREATE INDEX event_log_topic_position ON event_log (topic, position);
CREATE UNIQUE INDEX event_log_inventory_store_seq ON event_log (store_id, store_seq) WHERE topic = 'inventory';
