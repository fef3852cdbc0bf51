-- The outbox relay's progress is one cursor per store, no longer a mark on every event: each
-- store's outbox rows become visible in store_seq order (the sequence row lock is held until
-- commit), so "sent up to N" says everything "sent_at" said, for one row update per delivered
-- batch instead of one (non-HOT) update per event. The cursor lives with the other consumers'
-- offsets, as group 'outbox-relay' over the topic 'inventory'.
INSERT INTO platform.consumer_offsets (group_name, topic, store_id, last_seq)
SELECT 'outbox-relay', 'inventory', store_id,
       COALESCE(min(store_seq) FILTER (WHERE sent_at IS NULL) - 1, max(store_seq))
FROM inventory.outbox
GROUP BY store_id
ON CONFLICT (group_name, topic, store_id) DO NOTHING;

DROP INDEX inventory.outbox_unsent;
ALTER TABLE inventory.outbox DROP COLUMN sent_at;
