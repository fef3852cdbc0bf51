-- The inventory topic's (store, sequence) index was kept in every checkout's transaction: with one
-- terminal in each of many stores, each sale of a group commit wrote another store's index page.
-- A store's stock events are now filed by the `inventory-by-store` log consumer a batch at a time
-- (platform::eventlog::spawn_stock_filing); a read by store takes what is filed and the log's
-- tail after the consumer's offset.
DROP INDEX event_log_inventory_store_seq;
CREATE TABLE stock_events_by_store (
    store_id  TEXT    NOT NULL,
    store_seq INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (store_id, store_seq)
) WITHOUT ROWID;
INSERT INTO stock_events_by_store (store_id, store_seq, position)
    SELECT store_id, store_seq, position FROM event_log WHERE topic = 'inventory';
INSERT INTO consumer_offsets (group_name, position)
    SELECT 'inventory-by-store', COALESCE(MAX(position), 0) FROM event_log WHERE true
    ON CONFLICT (group_name) DO UPDATE SET position = excluded.position;
