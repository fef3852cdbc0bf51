-- The outbox's `position` (a BIGSERIAL primary key) ordered the relay's scan of unsent events
-- until the relay moved to a cursor per store on `store_seq` (migration 0003). Nothing reads it now,
-- yet every event still paid for a sequence value and an index entry: without it, PostgreSQL
-- used 7-16 % less CPU per checkout in the separate-processes benchmark (docs/BENCHMARKS.md, 7th
-- machine). The unique (store_id, store_seq) identifies an event, and is the replica identity.
ALTER TABLE sales.outbox DROP COLUMN position;
ALTER TABLE sales.outbox REPLICA IDENTITY USING INDEX outbox_store_id_store_seq_key;
